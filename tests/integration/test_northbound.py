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
