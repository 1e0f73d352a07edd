"""The sender's linger against a real broker: only while busy, never in front of RPC replies or stop."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from converters.model import ConvertedData, TelemetryEntry
from gateway.config.model import ThingsBoardConfig
from gateway.northbound import Northbound
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.uplink import encode_record
from tests.fixtures.broker import Broker, Subscriber

TELEMETRY = "v1/gateway/telemetry"
RPC = "v1/gateway/rpc"
LONG_LINGER_MS = 30_000.0  # far longer than any wait below


def event(n: int) -> bytes:
    return encode_record(ConvertedData("SN-1", "Thermo", telemetry=[TelemetryEntry(1000 + n, {"n": n})]))


def received(subscriber: Subscriber) -> list[int]:
    return [entry["values"]["n"] for entry in subscriber.telemetry_for("SN-1")]


@pytest.fixture
def storage() -> Iterator[MemoryStorage]:
    store = MemoryStorage(SizeLimits(10_000, 1 << 24))
    yield store
    store.close()


@pytest.fixture
def lingering(broker: Broker, storage: MemoryStorage) -> Iterator[Northbound]:
    config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token="t", protocol=broker.protocol)
    nb = Northbound(config, storage, linger_ms=LONG_LINGER_MS)
    nb.start()
    yield nb
    nb.stop(1.0)


def test_after_a_quiet_spell_an_event_goes_out_without_lingering(broker: Broker, storage: MemoryStorage,
                                                                  mqtt_subscriber: Subscriber) -> None:
    config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token="t", protocol=broker.protocol)
    nb = Northbound(config, storage, linger_ms=1500.0)
    nb.start()
    try:
        storage.put([event(1), event(2)])  # the first publish never lingers
        assert mqtt_subscriber.wait_for(lambda m: received(mqtt_subscriber) == [1, 2], 10)
        time.sleep(1.6)  # longer than the linger since the last publish: the link is idle
        storage.put([event(3)])
        # were the linger counted from now, event 3 would need 1.5 s; 1.2 s is ample for one publish
        assert mqtt_subscriber.wait_for(lambda m: received(mqtt_subscriber) == [1, 2, 3], 1.2)
    finally:
        nb.stop(1.0)


def test_rpc_reply_overtakes_a_lingering_batch_and_stop_ends_the_linger(
        lingering: Northbound, storage: MemoryStorage, mqtt_subscriber: Subscriber) -> None:
    storage.put([event(1), event(2)])  # a busy client: several events per batch
    assert mqtt_subscriber.wait_for(lambda m: received(mqtt_subscriber) == [1, 2], 10)
    storage.put([event(3)])  # the sender now lingers 30 s over it
    lingering.publish_rpc_reply("SN-1", 7, {"ok": True})
    assert mqtt_subscriber.wait_for(lambda m: any(t == RPC for t, _, _ in m), 10)
    assert received(mqtt_subscriber) == [1, 2]  # the reply did not wait for the linger; event 3 still does
    assert storage.count() == 1  # and event 3 is kept until it is acknowledged
    started = time.monotonic()
    lingering.stop(1.0)
    assert time.monotonic() - started < LONG_LINGER_MS / 1000 / 3
    assert storage.count() == 1  # unsent events stay stored for the next run


def test_a_lone_event_after_a_lone_event_goes_out_at_once(lingering: Northbound, storage: MemoryStorage,
                                                          mqtt_subscriber: Subscriber) -> None:
    for n in range(1, 4):  # a quiet client, one request at a time
        storage.put([event(n)])
        assert mqtt_subscriber.wait_for(lambda m, n=n: received(mqtt_subscriber) == list(range(1, n + 1)), 10)


def test_linger_zero_and_busy_flow_deliver_everything_in_order(broker: Broker, storage: MemoryStorage,
                                                               mqtt_subscriber: Subscriber) -> None:
    config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token="t", protocol=broker.protocol)
    for linger, first in ((0.0, 0), (5.0, 1000)):
        nb = Northbound(config, storage, linger_ms=linger)
        nb.start()
        try:
            for n in range(first, first + 300):
                storage.put([event(n)])
            assert mqtt_subscriber.wait_for(lambda m, f=first: f + 299 in received(mqtt_subscriber), 15)
        finally:
            nb.stop(2.0)
    assert received(mqtt_subscriber) == [*range(300), *range(1000, 1300)]
    assert storage.count() == 0


def test_an_idle_sender_is_woken_by_an_rpc_reply_and_by_stored_data(
        broker: Broker, storage: MemoryStorage, mqtt_subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing stored, nothing in flight: a reply or a new event must not wait for the idle poll."""
    from gateway.northbound import sender
    from gateway.uplink import GatewayUplink

    monkeypatch.setattr(sender, "IDLE_WAIT", 60.0)  # were the sender polling, nothing below would arrive
    config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token="t", protocol=broker.protocol)
    nb = Northbound(config, storage, linger_ms=0.0)
    nb.start()
    try:
        deadline = time.monotonic() + 10
        while not nb.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nb.connected
        time.sleep(0.5)  # the sender is now idle, waiting
        nb.publish_rpc_reply("SN-1", 9, {"ok": True})
        assert mqtt_subscriber.wait_for(lambda m: any(t == RPC for t, _, _ in m), 10)
        time.sleep(0.5)
        GatewayUplink(storage, nb).send([ConvertedData("SN-1", "Thermo", telemetry=[TelemetryEntry(5, {"n": 5})])])
        assert mqtt_subscriber.wait_for(lambda m: received(mqtt_subscriber) == [5], 10)
    finally:
        nb.stop(1.0)
