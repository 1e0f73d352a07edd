"""Two gateway instances behind HAProxy (deploy/haproxy/haproxy.cfg): one is SIGKILLed mid-load and restarted.

Each instance is its own ThingsBoard gateway device (own access token, own storage); one mosquitto
plays ThingsBoard. 20 devices post numbered messages one after the other, retrying a number until it
gets a 200, as a device that wants at-least-once does. What must hold: every 200 is delivered, the
failures are retryable (5xx or a connection error), each device stays on one instance, the other
instance's devices see no failure at all, and each device's numbers arrive in order (a number may
come again only as a re-delivery of one already seen).
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.daemon import ROOT, free_port

TEMPLATE = Path(ROOT, "deploy", "haproxy", "haproxy.cfg")
DEVICES = 20
MAX_PER_DEVICE = 300  # bounds the load in count; the phases below bound it in time
KILL_AT, RESTART_AT = 1.5, 2.5  # seconds into the load
AFTER_UP = 1.5  # seconds of load once HAProxy sees the restarted instance up again

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                                reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)")


def rest_for(shard: str) -> dict[str, Any]:
    """An anonymous JSON endpoint; every entry says which instance converted it (``via``)."""
    return {"host": "127.0.0.1", "port": "0", "SSL": False, "mapping": [{
        "endpoint": "/data", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
        "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                      "timeseries": [{"type": "int", "key": "n", "value": "${n}"},
                                     {"type": "string", "key": "via", "value": shard}]}}]}


def haproxy_config(listen: int, stats: int, gateways: dict[str, int]) -> str:
    """The shipped config with the test's ports, and abstract socket names no other run shares."""
    text = TEMPLATE.read_text(encoding="utf-8")
    replacements = [(r"bind :5000\n", f"bind 127.0.0.1:{listen}\n"),
                    (r"bind 127\.0\.0\.1:8404\n", f"bind 127.0.0.1:{stats}\n")]
    replacements += [(rf"server {name} 127\.0\.0\.1:\d+ ", f"server {name} 127.0.0.1:{port} ")
                     for name, port in gateways.items()]
    for pattern, new in replacements:
        text, count = re.subn(pattern, new, text)
        assert count == 1, f"{TEMPLATE} no longer has exactly one {pattern!r}"
    text, count = re.subn(r"abns@rest-gateway-", f"abns@rest-gateway-test{listen}-", text)
    assert count == 2 * len(gateways), "each shard: one server line in `shards`, one bind in its listen"
    return text


def wait_until_up(stats: int, server: str, timeout: float = 10.0) -> None:
    """Wait until HAProxy's health check has marked ``server`` (its listen section's server) UP."""
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        rows = requests.get(f"http://127.0.0.1:{stats}/;csv", timeout=2).text.splitlines()
        header = rows[0].lstrip("# ").split(",")
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == server and fields.get("svname") == server:
                status = fields.get("status", "?")
        if status == "UP":
            return
        time.sleep(0.1)
    raise AssertionError(f"HAProxy still reports {server} {status} after {timeout}s")


def start_haproxy(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"haproxy did not listen:\n{log.read_text()}")


class Device(threading.Thread):
    """Posts {"name", "n"} with n = 1, 2, ... through HAProxy; retries n until a 200."""

    def __init__(self, name: str, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.name_, self.url, self.stop = name, url, stop
        self.accepted: list[tuple[int, float]] = []  # (n, when)
        self.errors: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        n = 1
        while n <= MAX_PER_DEVICE and not self.stop.is_set():
            try:
                answer = session.post(self.url, json={"name": self.name_, "n": n}, timeout=10,
                                      headers={"X-Device-Name": self.name_})
                outcome = answer.status_code
            except requests.RequestException as exc:
                outcome = f"{type(exc).__name__}"
                session = requests.Session()
            if outcome == 200:
                self.accepted.append((n, time.monotonic()))
                n += 1
            else:
                self.errors.append(str(outcome))
                time.sleep(0.05)


def in_order(numbers: list[int]) -> bool:
    """New numbers strictly increase; a number seen before may come again (a re-delivery)."""
    seen: set[int] = set()
    highest = 0
    for n in numbers:
        if n in seen:
            continue
        if n <= highest:
            return False
        seen.add(n)
        highest = n
    return True


def test_sigkill_of_one_instance_behind_haproxy_loses_and_reorders_nothing(tmp_path, make_daemon, mqtt_subscriber):
    gateways = {shard: make_daemon(rest_for(shard), thingsboard={"security": {"accessToken": f"{shard}-token"}})
                for shard in ("gw0", "gw1")}
    listen, stats = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(listen, stats, {s: gw.port for s, gw in gateways.items()}))
    proxy = start_haproxy(config, listen, tmp_path / "haproxy.log")
    try:
        stop = threading.Event()
        devices = [Device(f"dev-{i:02d}", f"http://127.0.0.1:{listen}/data", stop) for i in range(DEVICES)]
        for device in devices:
            device.start()
        time.sleep(KILL_AT)
        gateways["gw0"].kill()
        killed = time.monotonic()
        time.sleep(RESTART_AT - KILL_AT)
        gateways["gw0"].start()
        wait_until_up(stats, "gw0")
        restarted = time.monotonic()
        time.sleep(AFTER_UP)
        stop.set()
        for device in devices:
            device.join(15)
            assert not device.is_alive(), f"{device.name_} hung"

        def delivered() -> dict[str, list[dict[str, Any]]]:
            return {d.name_: mqtt_subscriber.telemetry_for(d.name_) for d in devices}

        def all_delivered(_messages: Any) -> bool:
            got = delivered()
            return all({n for n, _ in d.accepted} <= {e["values"]["n"] for e in got[d.name_]} for d in devices)

        ok = mqtt_subscriber.wait_for(all_delivered, timeout=20)
        got = delivered()
        for device in devices:
            numbers = [entry["values"]["n"] for entry in got[device.name_]]
            missing = sorted({n for n, _ in device.accepted} - set(numbers))
            assert not missing, f"{device.name_}: answered 200 but never delivered: {missing[:20]}"
            assert in_order(numbers), f"{device.name_}: out of order: {numbers}"
            assert max(numbers, default=0) <= len(device.accepted) + 1, "delivered a number never sent"
        assert ok

        via = {d.name_: {entry["values"]["via"] for entry in got[d.name_]} for d in devices}
        assert all(len(shards) == 1 for shards in via.values()), f"a device moved between instances: {via}"
        on_gw0 = [d for d in devices if via[d.name_] == {"gw0"}]
        on_gw1 = [d for d in devices if via[d.name_] == {"gw1"}]
        assert on_gw0 and on_gw1, f"the hash put every device on one instance: {via}"
        # the kill was felt by gw0's devices only, as retryable errors; after the restart they went on
        assert any(d.errors for d in on_gw0), "no gw0 device saw the outage: the kill came too late"
        assert all(e in ("502", "503", "504") or not e.isdigit() for d in on_gw0 for e in d.errors), \
            {d.name_: sorted(set(d.errors)) for d in on_gw0}
        assert not [d.errors for d in on_gw1 if d.errors], "gw1's devices must not notice gw0's death"
        assert all(any(t > restarted for _, t in d.accepted) for d in on_gw0), "gw0 took no load once up again"
        assert all(any(t < killed for _, t in d.accepted) for d in devices), "load started too late"
    finally:
        proxy.terminate()
        proxy.wait(10)
