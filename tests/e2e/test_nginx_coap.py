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
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiocoap.error import UnparsableMessage
from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.e2e.test_haproxy import in_order
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port
from tests.fixtures.daemon import ROOT

TEMPLATE = Path(ROOT, "deploy", "nginx", "coap-stream.conf")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
DEVICES = 20
MESSAGES = 15  # per device
#: after a restart, how long devices that got nginx's empty datagram may take to be answered before the
#: test stops waiting for them (a session that stays deaf never recovers while the device keeps sending)
CUT_OFF_GRACE = 10.0


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


class ProxiedClient(RawClient):
    """A RawClient that ignores datagrams that are not CoAP, as a CoAP endpoint ignores what it cannot parse.

    nginx sends one, empty, to the client when reading from its upstream fails: after an instance was
    SIGKILLed its host answers the relayed datagram with ICMP port unreachable, nginx's ``recv()``
    fails with ECONNREFUSED and it passes the end of the upstream on as a zero-length datagram.
    """

    def __init__(self, port: int, source: str) -> None:
        super().__init__(port, source=source)
        self.empty = 0  # datagrams ignored

    def recv(self, timeout: float = 5.0) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return super().recv(max(0.01, deadline - time.monotonic()))
            except UnparsableMessage:
                self.empty += 1
                if time.monotonic() >= deadline:
                    return None


class Device(threading.Thread):
    """Posts {"n": 1, 2, ...} from its own address: MESSAGES of them, or until ``stop`` when one is given.

    A message not answered within 2 s is retransmitted (the same datagram, as CoAP does), up to 15 times.
    """

    def __init__(self, index: int, listen: int, stop: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.token = f"NGINX_DEV_{index:02d}"
        self.client = ProxiedClient(listen, source=f"127.0.0.{10 + index}")
        self.stop = stop
        self.created: list[tuple[int, float]] = []  # (n, when its 2.01 came)
        self.other: list[str] = []

    def run(self) -> None:
        try:
            n = 1
            while (n <= MESSAGES) if self.stop is None else not self.stop.is_set():
                message = self.client.build(Code.POST, f"api/v1/{self.token}/telemetry", b'{"n": %d}' % n)
                answer = None
                for _ in range(15):
                    self.client.send(message)
                    try:
                        answer = self.client.response(message.token, timeout=2)
                    except ConnectionRefusedError:  # an ICMP error relayed while an instance is down
                        answer = None
                    if answer is not None:
                        break
                if answer is not None and answer.code == Code.CREATED:
                    self.created.append((n, time.monotonic()))
                    n += 1
                else:
                    self.other.append(str(answer.code if answer is not None else "no answer"))
        finally:
            self.client.close()


def two_instances(make_daemon: Any) -> dict[str, Any]:
    """Two gateways serving the CoAP device API on their own UDP ports; each names the devices ``dev-NN@gwN``."""
    gateways = {}
    for shard in ("gw0", "gw1"):
        port = free_udp_port()
        devices = [{"accessToken": f"NGINX_DEV_{i:02d}", "deviceName": f"dev-{i:02d}@{shard}"} for i in range(DEVICES)]
        gateways[shard] = make_daemon(coap_rest(port, devices),
                                      thingsboard={"security": {"accessToken": f"{shard}-token"}})
    return gateways


def placement(subscriber: Any, shards: Any) -> dict[int, dict[str, list[int]]]:
    """Device index -> instance -> the numbers ThingsBoard got from it (instances with none left out)."""
    placed = {}
    for i in range(DEVICES):
        found = {shard: [e["values"]["n"] for e in subscriber.telemetry_for(f"dev-{i:02d}@{shard}")]
                 for shard in shards}
        placed[i] = {shard: numbers for shard, numbers in found.items() if numbers}
    return placed


def test_coap_posts_through_nginx_reach_thingsboard_each_device_on_one_instance(tmp_path, make_daemon,
                                                                                 mqtt_subscriber) -> None:
    ports = {shard: gw.coap_port for shard, gw in two_instances(make_daemon).items()}
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
    assert all([n for n, _ in d.created] == list(range(1, MESSAGES + 1)) for d in devices), \
        {d.token: d.other for d in devices if d.other}

    def all_delivered(_messages: Any) -> bool:
        placed = placement(mqtt_subscriber, ports)
        return all(set(sum(placed[i].values(), [])) >= set(range(1, MESSAGES + 1)) for i in range(DEVICES))

    assert mqtt_subscriber.wait_for(all_delivered, timeout=30), placement(mqtt_subscriber, ports)
    placed = placement(mqtt_subscriber, ports)
    assert all(len(found) == 1 for found in placed.values()), f"a device moved between instances: {placed}"
    for i, found in placed.items():
        (numbers,) = found.values()
        assert sorted(set(numbers)) == numbers, f"dev-{i:02d}: out of order: {numbers}"
    used = {shard for found in placed.values() for shard in found}
    assert used == set(ports), f"the hash put every device on one instance: {placed}"


def test_sigkill_of_one_instance_behind_nginx_moves_no_device_and_loses_no_2_01(tmp_path, make_daemon,
                                                                                  mqtt_subscriber) -> None:
    gateways = two_instances(make_daemon)
    ports = {shard: gw.coap_port for shard, gw in gateways.items()}
    listen = free_udp_port()
    proxy = start_nginx(nginx_config(tmp_path, listen, ports), tmp_path, listen)
    stop = threading.Event()
    devices = [Device(i, listen, stop) for i in range(DEVICES)]
    try:
        for device in devices:
            device.start()
        deadline = time.monotonic() + 60
        while sum(len(d.created) for d in devices) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateways["gw0"].kill()
        killed = time.monotonic()
        gateways["gw0"].start(timeout=60)  # the same UDP port: nginx's ring never changed
        restarted = time.monotonic()
        deadline = restarted + 90  # a fresh deadline: the one above may be nearly spent on a loaded box
        left_only_cut_off = None
        while time.monotonic() < deadline:  # until every device has been answered again since the restart,
            waiting = [d for d in devices if not answered_since(d, restarted + 0.5)]
            if not waiting:
                break
            if all(d.client.empty for d in waiting):  # but those nginx may have cut off get only a grace time
                left_only_cut_off = left_only_cut_off or time.monotonic()
                if time.monotonic() - left_only_cut_off > CUT_OFF_GRACE:
                    break
            else:
                left_only_cut_off = None
            time.sleep(0.05)
        stop.set()
        for device in devices:
            device.join(60)
            assert not device.is_alive(), f"{device.token} hung"
    finally:
        stop.set()
        proxy.terminate()
        proxy.wait(10)

    def all_delivered(_messages: Any) -> bool:
        placed = placement(mqtt_subscriber, ports)
        return all({n for n, _ in d.created} <= set(sum(placed[i].values(), [])) for i, d in enumerate(devices))

    assert mqtt_subscriber.wait_for(all_delivered, timeout=30), "a 2.01 was never delivered"
    placed = placement(mqtt_subscriber, ports)
    assert all(len(found) == 1 for found in placed.values()), f"a device moved between instances: {placed}"
    assert {shard for found in placed.values() for shard in found} == set(ports), placed
    for i, found in placed.items():
        (numbers,) = found.values()
        assert in_order(numbers), f"dev-{i:02d}: out of order: {numbers}"
    on_gw0 = [d for i, d in enumerate(devices) if "gw0" in placed[i]]
    assert on_gw0 and all(any(t < killed for _, t in d.created) for d in on_gw0), "gw0's devices were not answered"
    # answered again after the restart: every device nginx did not cut off (deploy/README.md: a session that
    # read the dead instance's port unreachable, the empty datagram, may stay deaf to the restarted instance)
    state = [(d.token, len(d.created), d.other[-3:], d.client.empty) for d in on_gw0]
    assert all(answered_since(d, restarted) for d in on_gw0 if not d.client.empty), \
        f"gw0's devices not answered after the restart (token, 2.01s, last failures, empty datagrams): {state}"
    cut_off = [d.token for d in on_gw0 if not answered_since(d, restarted)]
    print(f"gw0 down {restarted - killed:.1f} s; devices cut off by nginx after the restart: {cut_off or 'none'}",
          file=sys.stderr)


def answered_since(device: Device, moment: float) -> bool:
    """Whether ``device`` got a 2.01 after ``moment`` (monotonic time)."""
    return bool(device.created) and device.created[-1][1] > moment
