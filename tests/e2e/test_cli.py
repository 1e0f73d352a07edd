"""The command line as an operator uses it: check and run agree on problems; environment overrides apply."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import requests

from tests.e2e.test_uplink import AUTH, SPEC_BODY, published, shipped_rest, wait_until
from tests.fixtures.daemon import ROOT, free_port


def gateway(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("TB_GW_HOST", "TB_GW_PORT", "TB_GW_ACCESS_TOKEN"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_check_accepts_the_shipped_config_and_says_which_format():
    done = gateway("check", "-c", "config/gateway.yaml")
    assert done.returncode == 0, done.stderr
    assert "ThingsBoard gateway legacy format" in done.stdout
    assert "/my_devices" in done.stdout and "Configuration is valid." in done.stdout
    # every listener the shipped config opens is named: the device API over HTTP and over CoAP (udp)
    assert "device API   /api/v1/<token>/..." in done.stdout
    assert "CoAP         coap://127.0.0.1:5683/api/v1/<token>/... (udp;" in done.stdout


def test_check_and_run_report_the_same_problems(tmp_path):
    rest = shipped_rest()
    rest["mapping"][0]["endpoint"] = "my_devices"  # no leading slash
    rest["mapping"][0]["converter"]["timeseries"][0]["type"] = "decimal"  # unknown type
    (tmp_path / "rest.json").write_text(json.dumps(rest, indent=2))
    (tmp_path / "gateway.yaml").write_text(
        "thingsboard: {host: 127.0.0.1, port: 1883, security: {accessToken: t0k3n}}\n"
        "connectors: [{name: REST, type: rest, configuration: rest.json}]\n")
    config = str(tmp_path / "gateway.yaml")
    check = gateway("check", "-c", config)
    run = gateway("run", "-c", config)
    assert check.returncode == 1 and run.returncode == 1
    problems = [line.strip() for line in check.stderr.splitlines() if re.search(r"rest\.json:\d+: /", line)]
    assert len(problems) == 2, check.stderr
    assert any("/mapping/0/endpoint" in p for p in problems), check.stderr
    assert any("/mapping/0/converter/timeseries/0/type" in p and "decimal" in p for p in problems)
    for problem in problems:  # run refuses to start with the very same messages
        assert problem in run.stderr, (problem, run.stderr)
    assert all(str(tmp_path / "rest.json") in p for p in problems)  # each names the file


def test_environment_overrides_the_broker_address(make_daemon, broker, mqtt_subscriber):
    # the file points at a dead port; TB_GW_PORT (as in the ThingsBoard gateway's Docker image) wins
    gw = make_daemon(shipped_rest(), start=False, thingsboard={"port": free_port()})
    gw.start(env={"TB_GW_PORT": str(broker.port), "TB_GW_HOST": "127.0.0.1"})
    assert requests.post(gw.url("/my_devices"), json=SPEC_BODY, auth=AUTH, timeout=5).status_code == 200
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=15)
