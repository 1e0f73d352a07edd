"""Connector types register by name: a plugin's type, read from an entry point, is checked and run by the daemon.

The plugin is tests/fixtures/probe_connector.py, made visible to a real daemon process only through a
``rest_gateway.connectors`` entry point in a dist-info folder on PYTHONPATH (as ``pip install`` of a
plugin package would leave it); nothing under gateway/ knows it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.test_uplink import published, shipped_rest, wait_until
from tests.fixtures.daemon import ROOT

SECRET = "probe-secret-8d1e"


def plugin_path(tmp_path: Path, *entry_points: str) -> str:
    """A folder holding an installed-looking distribution whose entry points are ``entry_points``."""
    dist = tmp_path / "plugins" / "rest_gateway_probe-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rest-gateway-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rest_gateway.connectors]\n" + "\n".join(entry_points) + "\n")
    return str(tmp_path / "plugins")


def write_configs(folder: Path, connectors: list[dict], probe: dict | None = None) -> str:
    (folder / "rest.json").write_text(json.dumps(shipped_rest()))
    (folder / "probe.json").write_text(json.dumps(probe if probe is not None else {"device": "probe-1"}))
    (folder / "gateway.yaml").write_text(yaml.safe_dump({
        "thingsboard": {"host": "127.0.0.1", "port": 1883, "security": {"accessToken": "t0k3n-probe"}},
        "connectors": connectors}))
    return str(folder / "gateway.yaml")


def check(config: str, plugins: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + plugins)
    return subprocess.run([sys.executable, "-m", "gateway", "check", "-c", config], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


PROBE_ENTRY = {"name": "Probe", "type": "probe", "configuration": "probe.json"}
REST_ENTRY = {"name": "REST", "type": "rest", "configuration": "rest.json"}


def test_the_daemon_builds_and_starts_a_plugin_connector_type(make_daemon, tmp_path, mqtt_subscriber):
    plugins = plugin_path(tmp_path, "probe = tests.fixtures.probe_connector:PROBE")
    gw = make_daemon(shipped_rest(), start=False)
    workdir = Path(gw.workdir)
    (workdir / "probe.json").write_text(json.dumps({"device": "probe-1", "secret": SECRET}))
    gw.general["connectors"].append(PROBE_ENTRY)
    Path(gw.config_path).write_text(yaml.safe_dump(gw.general))
    gw.start(env={"PYTHONPATH": ROOT + os.pathsep + plugins})
    telemetry = wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"))
    (entry,) = telemetry[0]["probe-1"]
    assert entry["values"] == {"started": 1, "connector": "Probe"}
    assert {"device": "probe-1", "type": "Probe"} in published(mqtt_subscriber, "v1/gateway/connect")
    assert gw.stop() == 0
    log = gw.log_text()
    assert "probe connector Probe started (secret ***)" in log  # the type's secrets are masked
    assert SECRET not in log


def test_check_reads_a_plugin_type_and_lists_the_known_types_for_an_unknown_one(tmp_path):
    plugins = plugin_path(tmp_path, "probe = tests.fixtures.probe_connector:PROBE")
    config = write_configs(tmp_path, [REST_ENTRY, PROBE_ENTRY])
    done = check(config, plugins)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'probe.json'}: OK, probe connector config" in done.stdout
    assert "  connector 'Probe' (probe)\n  probes device probe-1\n" in done.stdout

    write_configs(tmp_path, [REST_ENTRY, {**PROBE_ENTRY, "type": "Probes"}], probe={})
    done = check(config, plugins)
    assert done.returncode == 1
    assert f"{config}:" in done.stderr  # file, line, JSON pointer, and the fix listing the known types
    assert ("/connectors/1/type: unknown connector type 'probes' (expected one of probe, rest (other types "
            "come from installed plugins, see docs/connectors.md))" in done.stderr), done.stderr

    write_configs(tmp_path, [REST_ENTRY, PROBE_ENTRY], probe={"device": ""})  # the plugin's own validation
    done = check(config, plugins)
    assert done.returncode == 1
    assert f"{tmp_path / 'probe.json'}: INVALID, 1 problem(s)" in done.stderr
    assert "/device: no device name" in done.stderr


def test_a_broken_plugin_is_a_config_error_naming_it(tmp_path):
    plugins = plugin_path(tmp_path, "probe = tests.fixtures.no_such_module:PROBE",
                          "misnamed = tests.fixtures.probe_connector:MISNAMED")
    config = write_configs(tmp_path, [REST_ENTRY, PROBE_ENTRY, {**PROBE_ENTRY, "name": "M", "type": "misnamed"}])
    done = check(config, plugins)
    assert done.returncode == 1
    assert ("/connectors/1/type: connector type 'probe' is not available: entry point probe = "
            "tests.fixtures.no_such_module:PROBE (rest_gateway.connectors) cannot be loaded: "
            "ModuleNotFoundError" in done.stderr), done.stderr
    assert "(expected fix or reinstall the package that provides it, or use one of rest)" in done.stderr
    assert ("/connectors/2/type: connector type 'misnamed' is not available: entry point misnamed = "
            "tests.fixtures.probe_connector:MISNAMED (rest_gateway.connectors) names the type 'other'; "
            "the names must match" in done.stderr), done.stderr
