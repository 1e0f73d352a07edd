"""The deployment files in deploy/: the systemd unit, the server config they share, the Docker image."""
from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.daemon import ROOT

DEPLOY = Path(ROOT, "deploy")
UNIT = DEPLOY / "systemd" / "rest-gateway.service"
INSTALLED_COMMAND = "/opt/rest-gateway/bin/rest-gateway"
CONFIG_DIR, STATE_DIR = "/etc/rest-gateway", "/var/lib/rest-gateway"


def unit_settings() -> dict[str, list[str]]:
    """The [Service] settings of the unit, each key with every value it is given (in order)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False,
                                       dict_type=_MultiDict)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return {key: value.split("\n") for key, value in parser["Service"].items()}


class _MultiDict(dict):
    """configparser keeps the last of repeated keys; systemd keeps them all (SystemCallFilter=...)."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def test_unit_is_hardened_and_uses_the_documented_paths() -> None:
    service = unit_settings()
    expected = {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                "ProtectHome": "yes", "StateDirectory": "rest-gateway", "ConfigurationDirectory": "rest-gateway",
                "Restart": "on-failure", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                "CapabilityBoundingSet": ""}
    for key, value in expected.items():
        assert service.get(key) == [value], f"{UNIT.name}: {key}={service.get(key)}, expected {value}"
    assert service["ExecStart"] == [f"{INSTALLED_COMMAND} run -c ${{CONFIGURATION_DIRECTORY}}/gateway.yaml"]
    # the storage the shipped server config names is the StateDirectory, the one writable place
    general = yaml.safe_load((DEPLOY / "config" / "gateway.yaml").read_text(encoding="utf-8"))
    assert Path(general["storage"]["data_file_path"]).parent == Path(STATE_DIR)
    assert service["WorkingDirectory"] == [STATE_DIR]


def test_server_config_is_the_shipped_one_listening_on_all_interfaces() -> None:
    shipped = json.loads(Path(ROOT, "config", "rest.json").read_text(encoding="utf-8"))
    server = json.loads((DEPLOY / "config" / "rest.json").read_text(encoding="utf-8"))
    assert server.pop("host") == "0.0.0.0"
    shipped.pop("host")
    assert server == shipped, "deploy/config/rest.json drifted from config/rest.json (only host may differ)"
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(DEPLOY / "config" / "gateway.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"storage sqlite at {STATE_DIR}/gateway.db" in done.stdout


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; .ci/run installs it)")
    # verify insists that ExecStart's program exists: stand one in for the installed venv's command
    program = tmp_path / "rest-gateway"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_COMMAND, str(program)), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # unknown keys and bad values are only warnings to verify: the unit must produce none
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr
