"""${ENV:NAME} secrets through the real command line: resolved, masked, and a missing variable is a clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.config.loader import load_config
from gateway.daemon import config_secrets
from tests.fixtures.daemon import ROOT

SECRETS = {"RGW_BASIC_PW": "basic-pw-1a2b3c4d5e", "RGW_BEARER": "bearer-tok-6f7a8b9c0d",
           "RGW_HMAC": "hmac-secret-1e2f3a4b5c6d7e8f", "RGW_RELAY_PW": "relay-pw-9a8b7c6d",
           "RGW_DEVICE_TOKEN": "device-tok-5e4d3c2b", "RGW_PROV_SECRET": "prov-secret-1f2e3d4c",
           "RGW_TB_TOKEN": "tb-token-0a1b2c3d4e"}
CONVERTER = {"type": "json", "deviceNameExpression": "${dev}", "timeseries": [{"key": "t", "value": "${t}"}]}


def write_configs(folder: Path) -> Path:
    rest = {"mapping": [
        {"endpoint": "/basic", "converter": CONVERTER,
         "security": {"type": "basic", "username": "u", "password": "${ENV:RGW_BASIC_PW}"}},
        {"endpoint": "/bearer", "converter": CONVERTER,
         "security": {"type": "bearer", "tokens": ["${ENV:RGW_BEARER}"]}},
        {"endpoint": "/hmac", "converter": CONVERTER, "security": {"type": "hmac", "secret": "${ENV:RGW_HMAC}"},
         "rateLimit": {"requests": 5, "by": "device"}}],
        "attributeUpdates": [{"requestUrlExpression": "http://127.0.0.1:9/${deviceName}",
                              "security": {"type": "basic", "username": "r", "password": "${ENV:RGW_RELAY_PW}"}}],
        "deviceApi": {"devices": [{"accessToken": "${ENV:RGW_DEVICE_TOKEN}", "deviceName": "d1"}],
                      "provisioning": {"provisionDeviceKey": "k", "provisionDeviceSecret": "${ENV:RGW_PROV_SECRET}"}}}
    (folder / "rest.json").write_text(json.dumps(rest, indent=2), encoding="utf-8")
    general = {"thingsboard": {"host": "127.0.0.1", "port": 1, "security": {"accessToken": "${ENV:RGW_TB_TOKEN}"}},
               "storage": {"type": "memory"},
               "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}]}
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(general), encoding="utf-8")
    return path


def check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RGW_", "TB_GW_"))}
    full.update(env, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(config)], env=full,
                          capture_output=True, text=True, timeout=30)


def test_check_resolves_every_secret_and_never_prints_one(tmp_path: Path) -> None:
    config = write_configs(tmp_path)
    done = check(config, SECRETS)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Configuration is valid." in output
    assert "/bearer  security bearer" in output
    assert "/hmac  security hmac, converter json, rate limit 5/1 s burst 5 by device" in output
    assert not [s for s in SECRETS.values() if s in output]


def test_missing_variables_are_all_reported_with_file_key_and_name(tmp_path: Path) -> None:
    config = write_configs(tmp_path)
    present = {k: v for k, v in SECRETS.items() if k not in ("RGW_HMAC", "RGW_TB_TOKEN", "RGW_PROV_SECRET")}
    done = check(config, present)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    rest = str(tmp_path / "rest.json")
    expected = [(rest, "/mapping/2/security/secret", "RGW_HMAC"),
                (rest, "/deviceApi/provisioning/provisionDeviceSecret", "RGW_PROV_SECRET"),
                (str(config), "/thingsboard/security/accessToken", "RGW_TB_TOKEN")]
    for file, pointer, name in expected:
        assert any(file in line and f": {pointer}: environment variable {name} is not set" in line
                   for line in output.splitlines()), (pointer, output)
    assert not [s for s in SECRETS.values() if s in output]


def test_the_log_mask_covers_every_secret_kind(tmp_path: Path, monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    masked = set(config_secrets(load_config(str(write_configs(tmp_path)))))
    assert set(SECRETS.values()) <= masked
