"""A rest.json with only a deviceApi section (no mapping): check accepts it, the daemon serves the device API."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_cli import gateway

TOKEN = "DEVICE_ONLY_TOKEN_7"
DEVICE = "Meter 12"
DEVICE_API = {"devices": [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "meter"}]}
GENERAL = ("thingsboard: {host: 127.0.0.1, port: 1883, security: {accessToken: t0k3n}}\n"
           "connectors: [{name: REST, type: rest, configuration: rest.json}]\n")


def check(folder: Path, rest: dict[str, Any]) -> Any:
    (folder / "rest.json").write_text(json.dumps(rest, indent=2), encoding="utf-8")
    (folder / "gateway.yaml").write_text(GENERAL, encoding="utf-8")
    return gateway("check", "-c", str(folder / "gateway.yaml"))


@pytest.mark.parametrize("rest", [
    {"host": "127.0.0.1", "port": "5000", "deviceApi": DEVICE_API},
    {"server": {"host": "127.0.0.1", "port": 5000}, "mapping": [], "deviceApi": DEVICE_API},
], ids=["legacy-no-mapping", "current-empty-mapping"])
def test_check_accepts_a_device_api_only_config(tmp_path: Path, rest: dict[str, Any]) -> None:
    done = check(tmp_path, rest)
    assert done.returncode == 0, done.stderr
    assert "Configuration is valid." in done.stdout
    assert "device API   /api/v1/<token>/...  1 device token(s)" in done.stdout  # the summary shows what is served


@pytest.mark.parametrize("rest", [
    {"host": "127.0.0.1", "port": "5000"},
    {"host": "127.0.0.1", "port": "5000", "mapping": [], "deviceApi": {**DEVICE_API, "enabled": False}},
], ids=["nothing", "device-api-disabled"])
def test_check_rejects_a_config_that_serves_nothing(tmp_path: Path, rest: dict[str, Any]) -> None:
    done = check(tmp_path, rest)
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if "rest.json:" in line and "nothing to serve" in line]
    assert len(problems) == 1, done.stderr
    assert '"mapping" entry' in problems[0] and '"deviceApi" section' in problems[0]


def test_daemon_serves_the_device_api_without_any_mapping(make_daemon, mqtt_subscriber) -> None:
    gw = make_daemon({"host": "127.0.0.1", "deviceApi": DEVICE_API})
    answer = requests.post(gw.url(f"/api/v1/{TOKEN}/telemetry"), json={"temperature": 21.5}, timeout=10)
    assert (answer.status_code, answer.content) == (200, b"")
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for(DEVICE), 15)
    assert mqtt_subscriber.telemetry_for(DEVICE)[0]["values"] == {"temperature": 21.5}
    for method, path in (("POST", "/my_devices"), ("GET", "/"), ("POST", f"/api/v1/{TOKEN}/nothing-here")):
        missing = requests.request(method, gw.url(path), json={"a": 1}, timeout=10)
        assert missing.status_code == 404, (method, path)
        assert missing.headers["Content-Type"].startswith("application/json")
        assert missing.json()["status"] == 404 and "error" in missing.json()
    assert requests.get(gw.url("/health"), timeout=10).status_code == 200
    assert gw.stop() == 0
    assert TOKEN not in gw.log_text()
