"""trustedProxies end to end: a real daemon behind the shipped HAProxy config limits ``by: client`` on the
address HAProxy forwards, and a spoofed X-Forwarded-For, through HAProxy or straight from a peer that is
not a trusted proxy, changes nothing. Clients use distinct loopback source addresses (127.0.0.x)."""
from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
import requests

from tests.e2e.test_haproxy import haproxy_config, start_haproxy
from tests.fixtures.daemon import free_port


def rest(trusted: list[str]) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": "0", "trustedProxies": trusted, "mapping": [{
        "endpoint": "/data", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
        "rateLimit": {"requests": 1, "perSeconds": 3600, "burst": 2, "by": "client"},
        "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                      "timeseries": [{"type": "int", "key": "n", "value": "${n}"}]}}]}


def post(port: int, source: str, n: int, forwarded_for: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST /data from the loopback address ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    headers = {"Content-Type": "application/json", "X-Device-Name": "dev"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        connection.request("POST", "/data", json.dumps({"name": f"dev-{source}", "n": n}), headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


@pytest.fixture
def behind_haproxy(tmp_path, make_daemon):
    import shutil
    from pathlib import Path

    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        pytest.skip("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
    gateways = {shard: make_daemon(rest(["127.0.0.1"]), thingsboard={"security": {"accessToken": f"{shard}-t"}})
                for shard in ("gw0", "gw1")}
    listen, stats = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(listen, stats, {s: gw.port for s, gw in gateways.items()}))
    proxy = start_haproxy(config, listen, tmp_path / "haproxy.log")
    yield listen, gateways
    proxy.terminate()
    proxy.wait(10)


def test_by_client_limits_use_the_address_haproxy_forwards(behind_haproxy, mqtt_subscriber) -> None:
    listen, gateways = behind_haproxy
    # every request carries the same X-Device-Name, so all of them land on one shard
    assert [post(listen, "127.0.0.2", n)[0] for n in (1, 2)] == [200, 200]
    status, body = post(listen, "127.0.0.2", 3)
    assert status == 429 and "for client 127.0.0.2" in body["error"], body
    # another client through the same proxy has its own bucket
    assert post(listen, "127.0.0.3", 1)[0] == 200
    # a client claiming another address: HAProxy appends the real one, which is the rightmost untrusted hop
    status, body = post(listen, "127.0.0.2", 4, forwarded_for="198.51.100.9")
    assert status == 429 and "for client 127.0.0.2" in body["error"], body
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for("dev-127.0.0.2")) == 2, 15)
    assert [e["values"]["n"] for e in mqtt_subscriber.telemetry_for("dev-127.0.0.2")] == [1, 2]
    metrics = "".join(requests.get(gw.admin_url("/metrics"), timeout=5).text for gw in gateways.values())
    assert 'outcome="forwarded"} 5.0' in metrics, metrics


def test_a_peer_that_is_not_a_trusted_proxy_cannot_name_the_client(make_daemon) -> None:
    gateway = make_daemon(rest(["127.0.0.1"]))
    # 127.0.0.4 connects directly and claims to be three different clients: one bucket, its own
    results = [post(gateway.port, "127.0.0.4", n, forwarded_for=f"203.0.113.{n}") for n in (1, 2, 3)]
    assert [status for status, _ in results] == [200, 200, 429]
    assert "for client 127.0.0.4" in results[2][1]["error"]
    metrics = requests.get(gateway.admin_url("/metrics"), timeout=5).text
    assert 'outcome="untrusted_header"} 3.0' in metrics, metrics
    # the trusted loopback proxy (127.0.0.1) may name the client
    assert post(gateway.port, "127.0.0.1", 4, forwarded_for="203.0.113.50")[0] == 200
    status, body = post(gateway.port, "127.0.0.1", 5, forwarded_for="203.0.113.50")
    assert status == 200, body
    status, body = post(gateway.port, "127.0.0.1", 6, forwarded_for="203.0.113.50")
    assert status == 429 and "for client 203.0.113.50" in body["error"], body


def test_check_reports_a_bad_trusted_proxy(tmp_path) -> None:
    import subprocess
    import sys

    from tests.fixtures.daemon import ROOT

    (tmp_path / "rest.json").write_text(json.dumps(rest(["127.0.0.1", "10.0.0.0/33"])))
    (tmp_path / "gateway.yaml").write_text(
        "thingsboard: {host: 127.0.0.1, port: 1883, security: {accessToken: t}}\n"
        "storage: {type: memory}\nconnectors: [{type: rest, name: REST, configuration: rest.json}]\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(tmp_path / "gateway.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "/trustedProxies/1" in out and "10.0.0.0/33" in out and "CIDR" in out, out


BOOM = '''
from converters.base import Converter


class Boom(Converter):
    def convert(self, config, data):
        raise RuntimeError("boom")
'''


def test_the_log_names_the_forwarded_client(tmp_path, make_daemon) -> None:
    extensions = tmp_path / "ext"
    extensions.mkdir()
    (extensions / "boom.py").write_text(BOOM, encoding="utf-8")
    config = rest(["127.0.0.1"])
    config["mapping"][0].pop("rateLimit")
    config["mapping"][0]["converter"] = {"type": "custom", "extension": "boom.Boom", "deviceNameExpression": "d"}
    gateway = make_daemon(config, general={"logging": {"format": "json"}, "extensionPaths": [str(extensions)]})
    status, body = post(gateway.port, "127.0.0.1", 1, forwarded_for="203.0.113.77")
    assert status == 400 and "boom" in body["error"]
    assert gateway.stop() == 0
    lines = [json.loads(line) for line in gateway.log_text().splitlines() if line.strip()]
    failed = [entry for entry in lines if "failed on a request" in entry["message"]]
    assert failed and failed[0]["client"] == "203.0.113.77" and "from 203.0.113.77" in failed[0]["message"], failed
