"""A 200 means stored: acknowledged messages survive broker outages, restarts and a SIGKILL of the daemon.

Each test prints ``acknowledged= delivered= duplicates=`` (bench/reliability_table.py collects them)
and asserts delivered ⊇ acknowledged, in order per device. The subscriber keeps a persistent
session on a persistent mosquitto, so what ThingsBoard would have received is observed exactly,
even for messages in flight when the broker goes down.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.e2e.test_uplink import json_mapping

# this module's broker and subscriber keep sessions across restarts (they override the shared fixtures)
from tests.fixtures.broker import persistent_broker, persistent_subscriber  # noqa: F401

CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


def post_until(url: str, device: str, acked: list, stop: threading.Event, limit: int = 100_000) -> None:
    """Post increasing ``seq`` values for ``device`` until ``stop``; record the ones answered 200."""
    session = requests.Session()
    for seq in range(limit):
        if stop.is_set():
            break
        try:
            answer = session.post(url, json={"dev": device, "seq": seq}, timeout=5)
        except requests.RequestException:
            continue
        if answer.status_code == 200:
            acked.append((device, seq))
    session.close()


def post_many(url: str, device: str, count: int, acked: list) -> None:
    """Post ``count`` messages for ``device`` one after another; record the ones answered 200."""
    post_until(url, device, acked, threading.Event(), limit=count)


def load(url: str, clients: int, acked: list) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [threading.Thread(target=post_until, args=(url, f"dev{i}", acked, stop)) for i in range(clients)]
    for t in threads:
        t.start()
    return stop, threads


def delivered(subscriber) -> list[tuple[str, int]]:
    out = []
    for payload in subscriber.on("v1/gateway/telemetry"):
        for device, entries in payload.items():
            out.extend((device, e["values"]["seq"]) for e in entries)
    return out


def assert_all_delivered_in_order(subscriber, acked, timeout=60.0):
    arrived = subscriber.wait_for(lambda _m: set(acked) <= set(delivered(subscriber)), timeout)
    missing = sorted(set(acked) - set(delivered(subscriber)))
    assert arrived, f"{len(missing)} acknowledged messages never arrived, e.g. {missing[:10]}"
    got = delivered(subscriber)
    for device in {d for d, _ in acked}:
        seqs = [s for d, s in got if d == device]
        first_seen = list(dict.fromkeys(seqs))  # at-least-once: the order of first arrival per device
        assert first_seen == sorted(first_seen), f"{device} out of order"
    duplicates = len(got) - len(set(got))
    print(f"acknowledged={len(acked)} delivered={len(set(got) & set(acked))} duplicates={duplicates}")


def test_broker_down_10s_while_4_clients_post(make_daemon, broker, mqtt_subscriber):
    gw = make_daemon(json_mapping(CONVERTER))
    acked: list = []
    stop, threads = load(gw.url("/data"), 4, acked)
    time.sleep(1.0)
    broker.stop()
    time.sleep(10.0)
    answered_while_down = len(acked)
    broker.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert answered_while_down > 0  # the gateway keeps accepting while ThingsBoard is away
    assert_all_delivered_in_order(mqtt_subscriber, acked)


def test_broker_restarted_every_2s_5_times_under_load(make_daemon, broker, mqtt_subscriber):
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistence to observe every delivery across restarts (amqtt loses "
                    "the subscriber's session)")
    gw = make_daemon(json_mapping(CONVERTER))
    acked: list = []
    stop, threads = load(gw.url("/data"), 4, acked)
    for _ in range(5):
        time.sleep(2.0)
        broker.restart()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 0
    assert_all_delivered_in_order(mqtt_subscriber, acked)


def sqlite_storage(durability: str | None) -> dict:
    """The daemon's storage section; None leaves durability out (the default, "power")."""
    storage = {"type": "sqlite", "data_file_path": "./data/gateway.db"}
    if durability is not None:
        storage["durability"] = durability
    return storage


# "process" (synchronous=NORMAL) promises exactly this: a 200 survives the daemon being killed
DURABILITY = pytest.mark.parametrize("durability", [None, "process"], ids=["power", "process"])


@DURABILITY
def test_sigkill_under_load_then_restart(make_daemon, broker, mqtt_subscriber, durability):
    gw = make_daemon(json_mapping(CONVERTER), storage=sqlite_storage(durability))
    acked: list = []
    stop, threads = load(gw.url("/data"), 4, acked)
    time.sleep(2.0)
    gw.kill()  # mid-load: some requests are cut off unanswered; those are not acknowledged
    stop.set()
    for t in threads:
        t.join(30)
    gw.start()
    assert_all_delivered_in_order(mqtt_subscriber, acked)


@DURABILITY
def test_sigkill_with_everything_still_queued(make_daemon, broker, mqtt_subscriber, durability):
    gw = make_daemon(json_mapping(CONVERTER), storage=sqlite_storage(durability))
    broker.stop()  # nothing can leave, so everything acknowledged sits in storage at the kill
    acked: list = []
    post_many(gw.url("/data"), "k1", 50, acked)
    gw.kill()
    broker.start()
    gw.start()
    assert len(acked) == 50
    assert_all_delivered_in_order(mqtt_subscriber, acked)
