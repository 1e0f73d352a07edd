"""The connector registry in-process: the bundled type, registering and refusing types, loading configs by type."""
from __future__ import annotations

from pathlib import Path

import pytest

from connectors import registry
from connectors.registry import ConnectorType, connector_type, known_types, register, unregister
from gateway.config.loader import read_all
from tests.fixtures.probe_connector import PROBE, read_probe_config


def test_the_rest_type_is_bundled() -> None:
    assert "rest" in known_types()
    rest = connector_type("rest")
    assert rest is not None and rest.name == "rest"


@pytest.mark.parametrize("name", ["", "Probe", "my probe", "-x"])
def test_a_type_name_must_be_lower_case_and_plain(name: str) -> None:
    with pytest.raises(ValueError, match="must be lower case"):
        register(ConnectorType(name=name, read_config=read_probe_config, create=PROBE.create))


def test_a_taken_name_is_refused_and_the_first_type_kept() -> None:
    rest = connector_type("rest")
    with pytest.raises(ValueError, match="'rest' is already registered"):
        register(ConnectorType(name="rest", read_config=read_probe_config, create=PROBE.create))
    assert connector_type("rest") is rest
    with pytest.raises(ValueError, match="not a ConnectorType"):
        register("probe")  # type: ignore[arg-type]


@pytest.fixture
def probe_registered():
    register(PROBE)
    yield PROBE
    unregister("probe")
    assert "probe" not in registry.known_types()


def test_a_registered_type_reads_its_own_config_file(probe_registered, tmp_path: Path) -> None:
    (tmp_path / "probe.json").write_text('{"device": "probe-7"}')
    (tmp_path / "gateway.yaml").write_text(
        "thingsboard: {host: 127.0.0.1, security: {accessToken: t0k3n-probe}}\n"
        "connectors: [{name: P, type: PROBE, configuration: probe.json}]\n")
    report = read_all(str(tmp_path / "gateway.yaml"))
    assert report.errors == []
    ((entry, config),) = report.connectors
    assert entry.type == "probe" and config == {"device": "probe-7", "secret": ""}
    assert report.formats[str(tmp_path / "probe.json")] == "probe connector config"
