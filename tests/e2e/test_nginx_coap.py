"""CoAP posts through nginx's stream module (deploy/nginx/coap-stream.conf) to two gateway instances.

Two daemons serve the CoAP device API on their own UDP ports, each its own ThingsBoard gateway device;
one mosquitto plays ThingsBoard. 20 devices, each sending from its own loopback address (127.0.0.x),
post numbered telemetry through nginx. What must hold: every 2.01 is delivered, each device stays on
one instance (``hash $remote_addr consistent``), and both instances get devices. To tell the instances
apart, each names the same access tokens' devices with its own suffix.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.fixtures.coap import RawClient, coap_rest, free_udp_port
from tests.fixtures.daemon import ROOT

TEMPLATE = Path(ROOT, "deploy", "nginx", "coap-stream.conf")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
DEVICES = 20
MESSAGES = 15  # per device


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


pytestmark = [
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (Debian package nginx; "
                       ".ci/run installs it)"),
    pytest.mark.skipif(not STREAM_MODULE.exists(), reason=f"nginx's stream module is missing ({STREAM_MODULE}; "
                       "Debian package libnginx-mod-stream, .ci/run installs it)"),
]


def nginx_config(workdir: Path, listen: int, gateways: dict[str, int]) -> Path:
    """A main nginx.conf around the shipped stream section, with the test's ports."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text, count = re.subn(r"listen 5683 udp;", f"listen 127.0.0.1:{listen} udp;", text)
    assert count == 1, f"{TEMPLATE} no longer has exactly one `listen 5683 udp;`"
    for name, port in gateways.items():
        text, count = re.subn(rf"server 127\.0\.0\.1:\d+ (max_fails=0;\s+# {name})", rf"server 127.0.0.1:{port} \1",
                              text)
        assert count == 1, f"{TEMPLATE} no longer has one `server ...` line for {name}"
    (workdir / "coap-stream.conf").write_text(text, encoding="utf-8")
    main = workdir / "nginx.conf"
    main.write_text(f"load_module {STREAM_MODULE};\nworker_processes 1;\ndaemon off;\npid {workdir}/nginx.pid;\n"
                    f"error_log {workdir}/error.log info;\nevents {{ worker_connections 1024; }}\n"
                    f"include {workdir}/coap-stream.conf;\n", encoding="utf-8")
    return main


def start_nginx(config: Path, workdir: Path, listen: int) -> subprocess.Popen[bytes]:
    """Start nginx and wait until a CoAP ping through it is answered (an instance's RST)."""
    log = open(workdir / "nginx.out", "wb")
    proc = subprocess.Popen([nginx_binary(), "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    probe = RawClient(listen)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "nginx.out").read_text() + (workdir / "error.log").read_text()
            mid = probe.next_mid()
            probe.send_raw(bytes([0x40, 0, mid >> 8, mid & 0xFF]))  # a CoAP ping: an empty CON
            try:
                answer = probe.recv(0.5)
            except ConnectionRefusedError:  # nginx does not listen yet
                time.sleep(0.1)
                continue
            if answer is not None and answer.mtype == Type.RST:
                return proc
    finally:
        probe.close()
    proc.kill()
    raise AssertionError(f"nginx did not relay a CoAP ping:\n{(workdir / 'error.log').read_text()}")


class Device(threading.Thread):
    """Posts {"n": 1..MESSAGES} from ``source``; a message not answered is retransmitted (same message ID)."""

    def __init__(self, index: int, listen: int) -> None:
        super().__init__(daemon=True)
        self.token = f"NGINX_DEV_{index:02d}"
        self.client = RawClient(listen, source=f"127.0.0.{10 + index}")
        self.created: list[int] = []
        self.other: list[str] = []

    def run(self) -> None:
        try:
            for n in range(1, MESSAGES + 1):
                message = self.client.build(Code.POST, f"api/v1/{self.token}/telemetry", b'{"n": %d}' % n)
                for _ in range(5):  # CoAP's retransmission of a CON, by hand
                    self.client.send(message)
                    answer = self.client.response(message.token, timeout=5)
                    if answer is not None:
                        break
                if answer is not None and answer.code == Code.CREATED:
                    self.created.append(n)
                else:
                    self.other.append(str(answer.code if answer is not None else "no answer"))
        finally:
            self.client.close()


def test_coap_posts_through_nginx_reach_thingsboard_each_device_on_one_instance(tmp_path, make_daemon,
                                                                                 mqtt_subscriber) -> None:
    ports = {shard: free_udp_port() for shard in ("gw0", "gw1")}
    for shard, port in ports.items():
        devices = [{"accessToken": f"NGINX_DEV_{i:02d}", "deviceName": f"dev-{i:02d}@{shard}"} for i in range(DEVICES)]
        make_daemon(coap_rest(port, devices), thingsboard={"security": {"accessToken": f"{shard}-token"}})
    listen = free_udp_port()
    proxy = start_nginx(nginx_config(tmp_path, listen, ports), tmp_path, listen)
    try:
        devices = [Device(i, listen) for i in range(DEVICES)]
        for device in devices:
            device.start()
        for device in devices:
            device.join(120)
            assert not device.is_alive(), f"{device.token} hung"
    finally:
        proxy.terminate()
        proxy.wait(10)
    assert all(d.created == list(range(1, MESSAGES + 1)) for d in devices), \
        {d.token: d.other for d in devices if d.other}

    def shards_of(index: int) -> dict[str, list[int]]:
        found = {shard: [e["values"]["n"] for e in mqtt_subscriber.telemetry_for(f"dev-{index:02d}@{shard}")]
                 for shard in ports}
        return {shard: numbers for shard, numbers in found.items() if numbers}

    def all_delivered(_messages: Any) -> bool:
        return all(set(sum(shards_of(i).values(), [])) >= set(range(1, MESSAGES + 1)) for i in range(DEVICES))

    assert mqtt_subscriber.wait_for(all_delivered, timeout=30), {i: shards_of(i) for i in range(DEVICES)}
    placed = {i: shards_of(i) for i in range(DEVICES)}
    assert all(len(found) == 1 for found in placed.values()), f"a device moved between instances: {placed}"
    for i, found in placed.items():
        (numbers,) = found.values()
        assert sorted(set(numbers)) == numbers, f"dev-{i:02d}: out of order: {numbers}"
    used = {shard for found in placed.values() for shard in found}
    assert used == set(ports), f"the hash put every device on one instance: {placed}"
