"""A 200 means stored: acknowledged messages survive a broker outage and a SIGKILL of the daemon."""
from __future__ import annotations

import threading
import time

import requests

from tests.e2e.test_uplink import json_mapping, wait_until

CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


def post_many(url: str, device: str, count: int, acked: list, stop: threading.Event | None = None) -> None:
    session = requests.Session()
    for seq in range(count):
        if stop is not None and stop.is_set():
            return
        try:
            answer = session.post(url, json={"dev": device, "seq": seq}, timeout=5)
        except requests.RequestException:
            continue
        if answer.status_code == 200:
            acked.append((device, seq))


def delivered(subscriber) -> list[tuple[str, int]]:
    out = []
    for payload in subscriber.on("v1/gateway/telemetry"):
        for device, entries in payload.items():
            out.extend((device, e["values"]["seq"]) for e in entries)
    return out


def assert_all_delivered_in_order(subscriber, acked, timeout=30.0):
    def complete():
        return set(acked) <= set(delivered(subscriber)) or None
    wait_until(subscriber, complete, timeout=timeout)
    got = delivered(subscriber)
    for device in {d for d, _ in acked}:
        seqs = [s for d, s in got if d == device]
        first_seen = list(dict.fromkeys(seqs))  # at-least-once: order of first arrival per device
        assert first_seen == sorted(first_seen), f"{device} out of order"
    duplicates = len(got) - len(set(got))
    print(f"sent/acknowledged={len(acked)} delivered={len(set(got))} duplicates={duplicates}")


def test_broker_outage_while_devices_post(make_daemon, broker, mqtt_subscriber):
    gw = make_daemon(json_mapping(CONVERTER))
    acked: list = []
    post_many(gw.url("/data"), "warmup", 5, acked)
    wait_until(mqtt_subscriber, lambda: len(delivered(mqtt_subscriber)) >= 5, timeout=10)
    broker.stop()
    threads = [threading.Thread(target=post_many, args=(gw.url("/data"), f"dev{i}", 60, acked)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(acked) == 5 + 4 * 60  # the gateway keeps accepting while ThingsBoard is away
    time.sleep(1.0)
    broker.start()
    wait_until(mqtt_subscriber, lambda: mqtt_subscriber.connections >= 2, timeout=10)
    assert_all_delivered_in_order(mqtt_subscriber, acked)


def test_sigkill_after_200s_then_restart(make_daemon, broker, mqtt_subscriber):
    gw = make_daemon(json_mapping(CONVERTER))
    broker.stop()  # nothing can leave, so everything acknowledged sits in storage at the kill
    acked: list = []
    post_many(gw.url("/data"), "k1", 50, acked)
    gw.kill()
    broker.start()
    wait_until(mqtt_subscriber, lambda: mqtt_subscriber.connections >= 2, timeout=10)
    gw.start()
    assert_all_delivered_in_order(mqtt_subscriber, acked)
    assert len(acked) == 50
