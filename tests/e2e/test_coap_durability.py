"""A 2.01 means stored: CoAP posts acknowledged by the daemon survive a SIGKILL and a broker outage.

Several devices post confirmable telemetry with increasing ``seq`` from their own UDP sockets; only
the ones answered 2.01 count as acknowledged. As in test_durability.py (HTTP), the subscriber keeps
a persistent session on a persistent mosquitto, and every acknowledged message must reach it, in
order per device (at least once: a message stored but not yet confirmed by the broker at the kill
may come twice).
"""
from __future__ import annotations

import threading
import time

import pytest
from aiocoap.numbers.codes import Code

from tests.e2e.test_durability import assert_all_delivered_in_order

# this module's broker and subscriber keep sessions across restarts (they override the shared fixtures)
from tests.fixtures.broker import persistent_broker, persistent_subscriber  # noqa: F401
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port

DEVICES = [{"accessToken": f"COAP_DURABLE_{i}", "deviceName": f"coap-dev{i}"} for i in range(6)]


@pytest.fixture
def gateway(make_daemon):
    port = free_udp_port()
    gw = make_daemon(coap_rest(port, DEVICES))
    gw.coap_port = port
    return gw


class Load:
    """One thread per device posting ``{"seq": n}`` over CoAP CON until stopped; records the 2.01s."""

    def __init__(self, port: int, devices: list[dict[str, str]]) -> None:
        self.acked: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(port, d["accessToken"], d["deviceName"]))
                         for d in devices]
        for thread in self._threads:
            thread.start()

    def _post(self, port: int, token: str, device: str) -> None:
        client = RawClient(port)
        try:
            seq = 0
            while not self._stop.is_set():
                answer = client.request(Code.POST, f"api/v1/{token}/telemetry", b'{"seq": %d}' % seq, timeout=2)
                if answer is not None and answer.code == Code.CREATED:
                    with self._lock:
                        self.acked.append((device, seq))
                seq += 1
        finally:
            client.close()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            assert time.monotonic() < deadline, f"only {self.count()} posts acknowledged in {timeout} s"
            time.sleep(0.01)

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        with self._lock:
            return list(self.acked)


def test_sigkill_under_coap_load_then_restart(gateway, mqtt_subscriber) -> None:
    load = Load(gateway.coap_port, DEVICES)
    try:
        load.wait_for(300)  # mid-load: posts are in flight, some stored but not yet answered
        gateway.kill()
    finally:
        acked = load.stop()
    assert len(acked) >= 300
    gateway.start()
    assert_all_delivered_in_order(mqtt_subscriber, acked)


def test_sigkill_right_after_the_last_2_01_with_everything_queued(gateway, broker, mqtt_subscriber) -> None:
    broker.stop()  # nothing can leave: every acknowledged post is only in the gateway's storage
    client = RawClient(gateway.coap_port)
    acked = []
    try:
        for seq in range(50):
            answer = client.request(Code.POST, f"api/v1/{DEVICES[0]['accessToken']}/telemetry",
                                    b'{"seq": %d}' % seq)
            assert answer is not None and answer.code == Code.CREATED, answer
            acked.append((DEVICES[0]["deviceName"], seq))
        gateway.kill()  # at once after the 50th 2.01
    finally:
        client.close()
    broker.start()
    gateway.start()
    assert_all_delivered_in_order(mqtt_subscriber, acked)


def test_broker_down_while_devices_post_over_coap(gateway, broker, mqtt_subscriber) -> None:
    load = Load(gateway.coap_port, DEVICES)
    try:
        load.wait_for(100)
        broker.stop()
        down_from = load.count()
        load.wait_for(down_from + 500)  # the gateway keeps answering 2.01 while ThingsBoard is away
        broker.start()
        load.wait_for(load.count() + 100)
    finally:
        acked = load.stop()
    assert_all_delivered_in_order(mqtt_subscriber, acked)
