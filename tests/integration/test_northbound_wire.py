"""The northbound link's exact MQTT conversation with a scripted broker: packets, rejections, refusals, re-sends."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import StorageConfig, ThingsBoardConfig
from gateway.northbound import Northbound
from gateway.storage.base import EventStorage
from gateway.storage.factory import create_storage
from tests.fixtures.fake_broker import DROP, AckThenDrop, FakeBroker, Packet
from tests.fixtures.mqtt_codec import decode_varint, encode_varint

TOKEN = "wire-test-token-7c1d"
TELEMETRY = "v1/gateway/telemetry"
ATTRIBUTES = "v1/gateway/attributes"
CONNECT = "v1/gateway/connect"
LIMITS_REQUEST = "v1/devices/me/rpc/request/1"
SUBSCRIBED = ["v1/gateway/attributes", "v1/gateway/rpc", "v1/gateway/attributes/response",
              "v1/devices/me/rpc/response/+", "v1/devices/me/rpc/request/+"]


def record(device: str, ts: int, values: dict[str, Any], attributes: dict[str, Any] | None = None,
           dtype: str = "Thermo") -> bytes:
    rec: dict[str, Any] = {"device": device, "type": dtype, "telemetry": [{"ts": ts, "values": values}]}
    if attributes:
        rec["attributes"] = attributes
    return json.dumps(rec, separators=(",", ":")).encode()


def body(packet: Packet) -> Any:
    return json.loads(packet.payload)


def data(broker: FakeBroker, conn: int | None = None) -> list[tuple[str, Any]]:
    """(topic, JSON) of every gateway-API publish, in arrival order."""
    return [(p.topic, body(p)) for p in broker.of("PUBLISH", conn) if p.topic.startswith("v1/gateway/")]


def telemetry_values(broker: FakeBroker, key: str, conn: int | None = None) -> list[Any]:
    return [entry["values"][key] for p in broker.of("PUBLISH", conn, TELEMETRY)
            for entries in body(p).values() for entry in entries]


def wait(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(params=["sqlite", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStorage]:
    store = create_storage(StorageConfig(type=request.param, data_file_path=str(tmp_path / "data" / "gw.db")))
    yield store
    store.close()


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[EventStorage]:
    store = create_storage(StorageConfig(type="sqlite", data_file_path=str(tmp_path / "data" / "gw.db")))
    yield store
    store.close()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Callable[..., Northbound]]:
    """Starts Northbound instances on a fake broker; every one is stopped at teardown."""
    made: list[Northbound] = []

    def start(broker: FakeBroker, storage: EventStorage, protocol: str = "mqtt5", **kw: Any) -> Northbound:
        settings: dict[str, Any] = {"min_reconnect_delay": 0.05, "max_reconnect_delay": 0.2, **kw}
        config = ThingsBoardConfig(host=broker.host, port=broker.port, access_token=TOKEN, protocol=protocol,
                                   **settings)
        nb = Northbound(config, storage, dead_letter_path=str(tmp_path / "dead-letter.jsonl"))
        made.append(nb)
        nb.start()
        return nb

    yield start
    for nb in made:
        nb.stop(1.0)


@pytest.fixture
def fake_broker() -> Iterator[Callable[..., FakeBroker]]:
    made: list[FakeBroker] = []

    def make(**kw: Any) -> FakeBroker:
        made.append(FakeBroker(**kw))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letter.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- the codec itself

@pytest.mark.parametrize("value", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])
def test_remaining_length_round_trips_at_every_byte_boundary(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == 1 + (value > 127) + (value > 16_383) + (value > 2_097_151)
    assert decode_varint(b"\x00" + encoded, 1) == (value, 1 + len(encoded))
    assert decode_varint(encoded[:-1], 0) is None  # incomplete: wait for more bytes


# ---------------------------------------------------------------- the happy conversation

@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_the_exact_conversation(protocol: str, storage: EventStorage, fake_broker: Any, link: Any) -> None:
    broker = fake_broker()
    storage.put([record("SN-1", 1000, {"t": 21.5}, {"model": "T1"}), record("SN-1", 2000, {"t": 22}),
                 record("SN-2", 1500, {"h": 40}, dtype="Hygro")])
    nb = link(broker, storage, protocol)
    wait(lambda: storage.count() == 0 and nb.stats()["acked"] == 4, what="delivery")
    nb.stop(1.0)
    assert broker.wait_for(lambda: any(p.kind == "DISCONNECT" for p in broker.packets))

    kinds = [p.kind for p in broker.packets]
    assert kinds == ["CONNECT", "SUBSCRIBE"] + ["PUBLISH"] * 5 + ["DISCONNECT"]
    connect = broker.packets[0]
    assert connect.protocol == (5 if protocol == "mqtt5" else 4)
    assert (connect.username, connect.password, connect.clean, connect.keepalive) == (TOKEN, None, True, 60)
    subscribe = broker.packets[1]
    no_local = 0x04 if protocol == "mqtt5" else 0
    assert subscribe.topics == [(t, 1 | no_local) for t in SUBSCRIBED]
    publishes = broker.of("PUBLISH")
    assert [(p.topic, body(p)) for p in publishes] == [
        (LIMITS_REQUEST, {"method": "getSessionLimits", "params": {"timeout": 5000}}),
        (CONNECT, {"device": "SN-1", "type": "Thermo"}),
        (CONNECT, {"device": "SN-2", "type": "Hygro"}),
        (ATTRIBUTES, {"SN-1": {"model": "T1"}}),
        (TELEMETRY, {"SN-1": [{"ts": 1000, "values": {"t": 21.5}}, {"ts": 2000, "values": {"t": 22}}],
                     "SN-2": [{"ts": 1500, "values": {"h": 40}}]}),
    ]
    assert all(p.qos == 1 and not p.retain and not p.dup for p in publishes)
    assert len({p.mid for p in publishes}) == len(publishes)
    assert publishes[-1].payload == b'{"SN-1":[{"ts":1000,"values":{"t":21.5}},{"ts":2000,"values":{"t":22}}],' \
                                    b'"SN-2":[{"ts":1500,"values":{"h":40}}]}'  # compact UTF-8 JSON
    stats = nb.stats()
    assert {k: stats[k] for k in ("published", "acked", "rejected", "dead_lettered", "events_sent",
                                  "duplicates_resent", "connects", "reconnects")} == {
        "published": 4, "acked": 4, "rejected": 0, "dead_lettered": 0, "events_sent": 3,
        "duplicates_resent": 0, "connects": 1, "reconnects": 0}


def test_keepalive_pings_are_answered_and_the_link_stays_up(storage: EventStorage, fake_broker: Any,
                                                            link: Any) -> None:
    broker = fake_broker()
    nb = link(broker, storage, keepalive=1)
    assert broker.wait_for(lambda: any(p.kind == "PINGREQ" for p in broker.packets), timeout=5)
    storage.put([record("A", 1, {"v": 1})])
    wait(lambda: storage.count() == 0, what="delivery after a ping")
    assert broker.connections == 1 and nb.connected


# ---------------------------------------------------------------- rejected publishes (MQTT 5)

@pytest.mark.parametrize("code", [0x80, 0x97])
def test_retryable_rejection_is_resent_after_a_backoff(code: int, storage: EventStorage, fake_broker: Any,
                                                      link: Any, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    rejected: list[int] = []

    def puback(p: Packet) -> int:
        if p.topic == TELEMETRY and not rejected:
            rejected.append(p.mid)
            return code
        return 0

    broker = fake_broker(puback=puback)
    storage.put([record("A", 1, {"v": 1}), record("A", 2, {"v": 2})])
    nb = link(broker, storage)
    wait(lambda: storage.count() == 0, what="delivery after the retry")
    sent = data(broker)
    expected = (TELEMETRY, {"A": [{"ts": 1, "values": {"v": 1}}, {"ts": 2, "values": {"v": 2}}]})
    # the retry re-announces the device first, on the same connection
    assert sent == [(CONNECT, {"device": "A", "type": "Thermo"}), expected,
                    (CONNECT, {"device": "A", "type": "Thermo"}), expected]
    assert broker.connections == 1
    stats = nb.stats()
    assert (stats["rejected"], stats["dead_lettered"], stats["duplicates_resent"]) == (1, 0, 2)
    assert dead_letters(tmp_path) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"0x{code:02X}" in m and "retry" in m for m in warnings)


@pytest.mark.parametrize("code", [0x88, 0x89, 0x95])
def test_a_reason_code_puback_cannot_carry_drops_the_connection_and_is_resent(
        code: int, storage: EventStorage, fake_broker: Any, link: Any, tmp_path: Path) -> None:
    """0x88/0x89/0x95 are CONNACK/DISCONNECT codes, not PUBACK ones: paho calls it a protocol error."""
    broker = fake_broker(puback=lambda p: code if p.topic == TELEMETRY and p.conn == 1 else 0)
    storage.put([record("A", 1, {"v": 1})])
    nb = link(broker, storage)
    wait(lambda: storage.count() == 0, what="delivery after reconnecting")
    assert telemetry_values(broker, "v", conn=1) == [1] and telemetry_values(broker, "v", conn=2) == [1]
    assert nb.stats()["reconnects"] == 1 and nb.stats()["dead_lettered"] == 0
    assert dead_letters(tmp_path) == []


def test_rate_limit_rejection_then_disconnect_is_resent_after_reconnecting(
        storage: EventStorage, fake_broker: Any, link: Any, tmp_path: Path) -> None:
    """ThingsBoard's answer to a rate-limit breach: PUBACK 0x97, then it closes the connection."""
    broker = fake_broker(puback=lambda p: AckThenDrop(0x97) if p.topic == TELEMETRY and p.conn == 1 else 0)
    storage.put([record("A", 1, {"v": 1})])
    nb = link(broker, storage)
    wait(lambda: storage.count() == 0, what="delivery after reconnecting")
    assert telemetry_values(broker, "v", conn=1) == [1] and telemetry_values(broker, "v", conn=2) == [1]
    assert [t for t, _ in data(broker, conn=2)] == [CONNECT, TELEMETRY]
    assert nb.stats()["rejected"] == 1 and nb.stats()["reconnects"] == 1
    assert dead_letters(tmp_path) == []


@pytest.mark.parametrize("code", [0x83, 0x87, 0x90, 0x91, 0x99])
def test_permanent_rejection_is_dead_lettered_and_the_queue_moves_on(
        code: int, storage: EventStorage, fake_broker: Any, link: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    broker = fake_broker(puback=lambda p: code if b'"bad"' in p.payload and p.topic == TELEMETRY else 0)
    storage.put([record("bad", 1, {"v": "x"})])
    bad_id = storage.peek(1)[0].id
    nb = link(broker, storage)
    wait(lambda: storage.count() == 0 and nb.stats()["dead_lettered"] == 1, what="the dead letter")
    storage.put([record("good", 2, {"v": 2})])
    wait(lambda: storage.count() == 0 and telemetry_values(broker, "v") == ["x", 2], what="later data")

    assert len(broker.of("PUBLISH", topic=TELEMETRY)) == 2  # the rejected one was never re-sent
    letters = dead_letters(tmp_path)
    assert [(d["event_id"], d["reason"], d["content"]) for d in letters] == [
        (bad_id, f"rejected by ThingsBoard: reason 0x{code:02X}",
         {"topic": TELEMETRY, "payload": '{"bad":[{"ts":1,"values":{"v":"x"}}]}'})]
    stats = nb.stats()
    assert (stats["rejected"], stats["dead_lettered"], stats["reconnects"]) == (1, 1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"0x{code:02X}" in m and "moved aside" in m for m in errors)


def test_malformed_rejection_with_disconnect_is_dead_lettered_once(storage: EventStorage, fake_broker: Any,
                                                                   link: Any, tmp_path: Path) -> None:
    """ThingsBoard's answer to a structure error on MQTT 5: PUBACK 0x83, then DISCONNECT 0x83."""
    broker = fake_broker(puback=lambda p: AckThenDrop(0x83) if p.topic == TELEMETRY and b'"bad"' in p.payload else 0)
    storage.put([record("bad", 1, {"v": 1})])
    nb = link(broker, storage)
    wait(lambda: nb.stats()["reconnects"] == 1 and storage.count() == 0, what="reconnect")
    storage.put([record("good", 2, {"v": 2})])
    wait(lambda: storage.count() == 0 and telemetry_values(broker, "v", conn=2) == [2], what="later data")
    assert len(dead_letters(tmp_path)) == 1 and nb.stats()["dead_lettered"] == 1
    assert telemetry_values(broker, "v", conn=1) == [1]


# ---------------------------------------------------------------- refused credentials

@pytest.mark.parametrize(("protocol", "code", "cause"), [("mqtt5", 0x86, "bad user name or password"),
                                                         ("mqtt5", 0x87, "not authorized"),
                                                         ("mqtt311", 5, "not authorized"),
                                                         ("mqtt311", 4, "bad user name or password")])
def test_refused_credentials_one_clear_error_backoff_and_data_kept(
        protocol: str, code: int, cause: str, storage: EventStorage, fake_broker: Any, link: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    stamps: list[float] = []

    def connack(p: Packet) -> int:
        stamps.append(time.monotonic())
        if p.conn <= 4:
            assert storage.count() == 2  # nothing leaves storage while refused
            return code
        return 0

    broker = fake_broker(connack=connack)
    storage.put([record("A", 1, {"v": 1}), record("A", 2, {"v": 2})])
    caplog.set_level("DEBUG", logger="rest_gateway.northbound")
    nb = link(broker, storage, protocol)
    wait(lambda: storage.count() == 0, what="delivery once the credentials are accepted")
    assert telemetry_values(broker, "v") == [1, 2]
    assert all(p.conn == 5 for p in broker.packets if p.kind != "CONNECT")  # no data before a CONNACK 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    assert "refused the connection" in errors[0] and cause in errors[0].lower()
    assert "check the gateway credentials" in errors[0] and f"127.0.0.1:{broker.port}" in errors[0]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] >= 0.04 and gaps[2] >= 0.15  # 0.05 s, then doubling towards 0.2 s
    assert nb.stats()["connects"] == 1


def test_refusal_after_an_unreachable_spell_is_still_reported(storage: EventStorage, fake_broker: Any, link: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a refusal that followed an 'unreachable' warning in the same outage was only DEBUG."""
    broker = fake_broker(connack=lambda p: DROP if p.conn == 1 else 0x86 if p.conn <= 3 else 0)
    link(broker, storage)
    wait(lambda: broker.connections >= 4 and any(p.kind == "SUBSCRIBE" for p in broker.packets),
         what="the accepted connection")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(warnings) == 1 and "unreachable" in warnings[0]
    assert len(errors) == 1 and "bad user name or password" in errors[0].lower()


def test_server_busy_refusal_does_not_blame_the_credentials(storage: EventStorage, fake_broker: Any, link: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    broker = fake_broker(connack=lambda p: 0x89 if p.conn == 1 else 0)
    link(broker, storage)
    wait(lambda: any(p.kind == "SUBSCRIBE" for p in broker.packets), what="the accepted connection")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "server busy" in errors[0].lower() and "credentials" not in errors[0]


# ---------------------------------------------------------------- re-publish after a dropped connection

@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_dropped_connection_resends_exactly_the_unacked_window(protocol: str, sqlite_storage: EventStorage,
                                                               fake_broker: Any, link: Any) -> None:
    storage = sqlite_storage
    left_at_reconnect: list[list[int]] = []

    def connack(p: Packet) -> int:
        if p.conn == 2:  # what the link kept after the drop: everything from the first un-acked event
            left_at_reconnect.append([json.loads(e.payload)["telemetry"][0]["values"]["n"]
                                      for e in storage.peek(100)])
        return 0

    def puback(p: Packet) -> int | str | None:
        if p.conn > 1 or p.topic != TELEMETRY:
            return 0
        n = body(p)["D"][0]["values"]["n"]
        return 0 if n <= 3 else None if n <= 6 else DROP  # acked 1-3, held 4-6, connection dies at 7

    broker = fake_broker(connack=connack, puback=puback)
    # a 200-byte packet limit puts each event in its own publish
    storage.put([record("D", 1000 + n, {"n": n, "pad": "x" * 50}) for n in range(1, 11)])
    nb = link(broker, storage, protocol, max_payload_bytes=200)
    wait(lambda: storage.count() == 0, what="delivery after the reconnect")

    assert telemetry_values(broker, "n", conn=1) == [1, 2, 3, 4, 5, 6, 7]
    assert left_at_reconnect == [[4, 5, 6, 7, 8, 9, 10]]  # trimmed only through the acked events
    assert telemetry_values(broker, "n", conn=2) == [4, 5, 6, 7, 8, 9, 10]
    assert [t for t, _ in data(broker, conn=2)][0] == CONNECT  # re-announced before its data
    delivered = telemetry_values(broker, "n")
    assert sorted(set(delivered)) == list(range(1, 11))
    duplicates = sorted(n for n in set(delivered) if delivered.count(n) > 1)
    assert duplicates == [4, 5, 6, 7]  # only within the un-acked window
    stats = nb.stats()
    assert stats["reconnects"] == 1
    assert 4 <= stats["duplicates_resent"] <= 7  # re-read events the link had already handed to paho


def test_a_stale_puback_never_acknowledges_a_later_publish(storage: EventStorage, fake_broker: Any, link: Any) -> None:
    """Regression: the getSessionLimits PUBACK stayed in the ack table, so once paho's message ids
    wrapped (65535 → 1) the publish that reused its id was taken as acked and trimmed from storage."""
    broker = fake_broker(puback=lambda p: None if p.topic == TELEMETRY and p.conn == 1 else 0)
    nb = link(broker, storage)
    assert broker.wait_for(lambda: any(p.topic == LIMITS_REQUEST for p in broker.packets))
    stale_mid = broker.of("PUBLISH", topic=LIMITS_REQUEST)[0].mid
    assert stale_mid == 2  # after the SUBSCRIBE's 1
    wait(lambda: nb.connected, what="connected")
    time.sleep(0.2)  # the sender has collected the getSessionLimits PUBACK by now
    client = nb._session.client  # white box: jump paho's id counter to just before the wrap
    with client._mid_generate_mutex:
        client._last_mid = 65535  # the device's connect gets id 1, its telemetry id 2
    storage.put([record("A", 1, {"v": 1})])
    assert broker.wait_for(lambda: any(p.topic == TELEMETRY for p in broker.packets))
    assert broker.of("PUBLISH", topic=TELEMETRY)[0].mid == stale_mid
    time.sleep(0.3)
    assert storage.count() == 1  # not acknowledged, so still stored
    broker.drop_all()
    wait(lambda: storage.count() == 0, what="re-send after the reconnect")
    assert telemetry_values(broker, "v") == [1, 1]


def test_stop_during_a_retry_wait_is_prompt(storage: EventStorage, fake_broker: Any, link: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Regression: after a retryable rejection the sender waited up to 30 s for the other in-flight
    PUBACKs without looking at stop(), so stop() gave up joining it and its thread leaked."""
    broker = fake_broker(puback=lambda p: 0x97 if p.topic == TELEMETRY and p.index == 3 else
                         None if p.topic == TELEMETRY else 0)
    # a 200-byte packet limit puts each event in its own publish: one rejected, one never acked
    storage.put([record("D", n, {"n": n, "pad": "x" * 50}) for n in (1, 2)])
    nb = link(broker, storage, max_payload_bytes=200)
    assert broker.wait_for(lambda: len([p for p in broker.packets if p.topic == TELEMETRY]) == 2)
    wait(lambda: nb.stats()["rejected"] == 1, what="the rejection")
    nb.stop(0.5)
    assert not any("did not stop" in r.getMessage() for r in caplog.records)
    assert not nb.connected and storage.count() == 2
