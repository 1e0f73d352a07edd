"""Northbound against a real broker, with a real subscriber playing ThingsBoard."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import RateLimits, ThingsBoardConfig
from gateway.northbound import Northbound
from gateway.storage.base import EventStorage, StoredEvent
from tests.fixtures.broker import Broker, Subscriber

TELEMETRY = "v1/gateway/telemetry"
ATTRIBUTES = "v1/gateway/attributes"
CONNECT = "v1/gateway/connect"


class ListStorage(EventStorage):
    """A tiny thread-safe in-test storage (the real backends have their own suite)."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.next_id = 1
        self.cond = threading.Condition()
        self.removed_through = 0

    def put(self, payloads: Sequence[bytes]) -> None:
        with self.cond:
            for p in payloads:
                self.events.append(StoredEvent(self.next_id, p))
                self.next_id += 1
            self.cond.notify_all()

    def peek(self, limit: int) -> list[StoredEvent]:
        with self.cond:
            return self.events[:limit]

    def remove_through(self, event_id: int) -> None:
        with self.cond:
            self.events = [e for e in self.events if e.id > event_id]
            self.removed_through = max(self.removed_through, event_id)
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for_data(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: bool(self.events), timeout)

    def close(self) -> None:
        pass

    def wait_empty(self, timeout: float = 15.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.events, timeout)


def record(device: str, ts: int | None = None, values: dict[str, Any] | None = None,
           attributes: dict[str, Any] | None = None, dtype: str = "Thermo") -> bytes:
    rec: dict[str, Any] = {"device": device, "type": dtype}
    if attributes:
        rec["attributes"] = attributes
    if values is not None:
        rec["telemetry"] = [{"ts": ts, "values": values}]
    return json.dumps(rec, separators=(",", ":")).encode()


class Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.cond = threading.Condition()

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        with self.cond:
            self.calls.append(("attr", device, data))
            self.cond.notify_all()

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> None:
        if method == "explode":
            raise RuntimeError("handler failure")
        with self.cond:
            self.calls.append(("rpc", device, request_id, method, params))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.calls) >= count, timeout)


def tb_config(broker: Broker, **kw: Any) -> ThingsBoardConfig:
    return ThingsBoardConfig(host=broker.host, port=broker.port, access_token="secret-token",
                             protocol=broker.protocol, min_reconnect_delay=1.0, max_reconnect_delay=2.0, **kw)


@pytest.fixture
def storage() -> ListStorage:
    return ListStorage()


@pytest.fixture
def make_northbound(broker: Broker, storage: ListStorage, tmp_path: Path) -> Iterator[Any]:
    created: list[Northbound] = []

    def make(handler: Any = None, **kw: Any) -> Northbound:
        nb = Northbound(tb_config(broker, **kw), storage, dead_letter_path=str(tmp_path / "dead.jsonl"))
        if handler is not None:
            nb.set_downlink_handler(handler)
        nb.start()
        created.append(nb)
        return nb

    yield make
    for nb in created:
        nb.stop(2.0)


def wait_connected(nb: Northbound, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not nb.connected:
        assert time.monotonic() < deadline, "northbound never connected"
        time.sleep(0.02)


def test_events_arrive_exactly_as_thingsboard_sees_them(make_northbound: Any, storage: ListStorage,
                                                       mqtt_subscriber: Subscriber) -> None:
    storage.put([record("SN-1", 1000, {"t": 21.5}, {"model": "T1"}),
                 record("SN-1", 2000, {"t": 22}), record("SN-2", 1500, {"h": 40}, dtype="Hygro")])
    make_northbound()
    assert storage.wait_empty()
    assert mqtt_subscriber.wait_for(lambda m: len([x for x in m if x[0] == TELEMETRY]) >= 1)
    assert mqtt_subscriber.connects() == [{"device": "SN-1", "type": "Thermo"},
                                          {"device": "SN-2", "type": "Hygro"}]
    assert mqtt_subscriber.on(ATTRIBUTES) == [{"SN-1": {"model": "T1"}}]
    assert mqtt_subscriber.on(TELEMETRY) == [{"SN-1": [{"ts": 1000, "values": {"t": 21.5}},
                                                       {"ts": 2000, "values": {"t": 22}}],
                                              "SN-2": [{"ts": 1500, "values": {"h": 40}}]}]
    topics = [t for t, _, _ in mqtt_subscriber.messages if t.startswith("v1/gateway/")]
    assert topics.index(CONNECT) < topics.index(TELEMETRY)
    assert all(q == 1 for t, _, q in mqtt_subscriber.messages if t.startswith("v1/gateway/"))


def test_many_queued_events_are_packed_into_few_publishes(make_northbound: Any, storage: ListStorage,
                                                          mqtt_subscriber: Subscriber) -> None:
    storage.put([record(f"dev-{i % 10}", i, {"n": i}) for i in range(1, 2001)])
    nb = make_northbound()
    assert storage.wait_empty()
    assert mqtt_subscriber.wait_for(lambda m: sum(len(e) for t, b, _ in m if t == TELEMETRY
                                                  for e in b.values()) >= 2000)
    telemetry = mqtt_subscriber.on(TELEMETRY)
    assert len(telemetry) <= 10
    for d in range(10):
        assert [e["values"]["n"] for e in mqtt_subscriber.telemetry_for(f"dev-{d}")] == \
            [i for i in range(1, 2001) if i % 10 == d]
    assert nb.stats()["duplicates_resent"] == 0


def test_broker_restart_with_queued_events_everything_arrives_and_devices_reannounced(
        make_northbound: Any, broker: Broker, storage: ListStorage, mqtt_subscriber: Subscriber) -> None:
    nb = make_northbound()
    storage.put([record("A", 1, {"v": 1}, dtype="TypeA")])
    assert storage.wait_empty()
    broker.stop()
    deadline = time.monotonic() + 10
    while nb.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not nb.connected
    storage.put([record("B", i, {"v": i}) for i in range(2, 50)])
    assert storage.count() == 48  # nothing leaves storage while ThingsBoard is away
    mqtt_subscriber.clear()
    broker.start()
    assert storage.wait_empty(20)
    assert mqtt_subscriber.wait_for(lambda m: len(mqtt_subscriber.telemetry_for("B")) >= 48)
    assert [e["ts"] for e in mqtt_subscriber.telemetry_for("B")] == list(range(2, 50))
    assert {"device": "A", "type": "TypeA"} in mqtt_subscriber.connects()  # re-announced, no new data
    assert nb.stats()["reconnects"] == 1


def test_session_limits_answer_changes_the_max_payload(make_northbound: Any, storage: ListStorage,
                                                       mqtt_subscriber: Subscriber) -> None:
    nb = make_northbound()
    request_prefix = "v1/devices/me/rpc/request/"
    assert mqtt_subscriber.wait_for(lambda m: any(t.startswith(request_prefix) for t, _, _ in m))
    topic, body, qos = next(x for x in mqtt_subscriber.messages if x[0].startswith(request_prefix))
    assert body == {"method": "getSessionLimits", "params": {"timeout": 5000}} and qos == 1
    request_id = topic.rsplit("/", 1)[1]
    mqtt_subscriber.publish(f"v1/devices/me/rpc/response/{request_id}",
                            {"maxPayloadSize": 2000, "maxInflightMessages": 7,
                             "gatewayRateLimits": {"messages": "1000:1"}, "rateLimits": {}})
    deadline = time.monotonic() + 10
    while nb.stats()["max_payload_bytes"] != 2000:
        assert time.monotonic() < deadline, "limits never applied"
        storage.put([record("probe", 1, {"p": 1})])  # the sender applies limits between rounds
        time.sleep(0.05)
    assert nb.stats()["max_inflight"] == 7
    storage.put([record("S", i, {"payload": "x" * 100}) for i in range(100)])
    assert storage.wait_empty()
    assert mqtt_subscriber.wait_for(lambda m: len(mqtt_subscriber.telemetry_for("S")) >= 100)
    big = [b for b in mqtt_subscriber.on(TELEMETRY) if "S" in b]
    assert len(big) > 5
    assert all(len(json.dumps(b, separators=(",", ":")).encode()) < 2000 for b in big)


def test_downlink_reaches_the_handler_and_bad_messages_do_not_stop_it(
        make_northbound: Any, broker: Broker, mqtt_subscriber: Subscriber) -> None:
    handler = Handler()
    nb = make_northbound(handler)
    wait_connected(nb)
    time.sleep(0.2)  # SUBACK
    mqtt_subscriber.publish(ATTRIBUTES, b"{not json")
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "D", "data": {"id": "x", "method": "m"}})
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "D", "data": {"id": 1, "method": "explode"}})
    mqtt_subscriber.publish(ATTRIBUTES, {"device": "D", "data": {"on": True}})
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "D", "data": {"id": 42, "method": "toggle",
                                                                       "params": {"pin": 1}}})
    assert handler.wait(2)
    assert ("attr", "D", {"on": True}) in handler.calls
    assert ("rpc", "D", 42, "toggle", {"pin": 1}) in handler.calls
    nb.publish_rpc_reply("D", 42, {"success": True})
    assert mqtt_subscriber.wait_for(lambda m: any(t == "v1/gateway/rpc" and b.get("id") == 42
                                                  for t, b, _ in m))
    reply = [(b, q) for t, b, q in mqtt_subscriber.messages if t == "v1/gateway/rpc" and "id" in b]
    assert reply == [({"device": "D", "id": 42, "data": {"success": True}}, 1)]
    # our own reply (and client attributes) must not come back to the handler
    time.sleep(0.3)
    assert len(handler.calls) == 2
    assert nb.stats()["downlink_ignored"] >= 2
    with pytest.raises(ValueError):
        nb.publish_rpc_reply("", 1, {})


def test_own_attribute_publications_are_not_delivered_to_the_handler(
        make_northbound: Any, storage: ListStorage, mqtt_subscriber: Subscriber) -> None:
    handler = Handler()
    nb = make_northbound(handler)
    wait_connected(nb)
    time.sleep(0.2)
    storage.put([record("device", None, None, {"data": {"x": 1}})])  # looks like a TB update on 3.1.1
    assert storage.wait_empty()
    assert mqtt_subscriber.wait_for(lambda m: any(t == ATTRIBUTES for t, _, _ in m))
    time.sleep(0.3)
    assert handler.calls == []


def test_stop_leaves_no_threads(broker: Broker, storage: ListStorage, mqtt_subscriber: Subscriber) -> None:
    before = set(threading.enumerate())
    nb = Northbound(tb_config(broker), storage)
    nb.set_downlink_handler(Handler())
    nb.start()
    wait_connected(nb)
    storage.put([record("A", 1, {"v": 1})])
    assert storage.wait_empty()
    nb.stop(2.0)
    assert not nb.connected
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()


def test_unreachable_thingsboard_is_logged_once_without_the_token(storage: ListStorage,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ThingsBoardConfig(host="127.0.0.1", port=port, access_token="secret-token",
                               min_reconnect_delay=0.05, max_reconnect_delay=0.1, rate_limits=RateLimits())
    nb = Northbound(config, storage)
    caplog.set_level("DEBUG", logger="rest_gateway.northbound")
    nb.start()
    time.sleep(1.0)
    nb.stop(1.0)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()
    assert sum("cannot reach" in r.getMessage() for r in caplog.records) >= 2
    assert all("secret-token" not in r.getMessage() for r in caplog.records)
