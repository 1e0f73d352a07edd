"""Packing stored events into gateway-API publishes: size limits, order, connects, splitting, validation."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.northbound.packing import Packer
from gateway.northbound.publishes import (
    TOPIC_ATTRIBUTES,
    TOPIC_CONNECT,
    TOPIC_TELEMETRY,
    connect_publish,
    rpc_reply_publish,
    validate_message,
)


def rec(device: str, entries: list[tuple[int, dict[str, Any]]] = (), attributes: dict[str, Any] | None = None,
        dtype: str = "T") -> bytes:
    r: dict[str, Any] = {"device": device, "type": dtype}
    if attributes:
        r["attributes"] = attributes
    if entries:
        r["telemetry"] = [{"ts": ts, "values": v} for ts, v in entries]
    return json.dumps(r).encode()


def packet_size(topic: str, payload: bytes) -> int:
    """Real MQTT 5 PUBLISH size with QoS 1: header + varint + topic + id + props length + payload."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + varint + remaining


Replayed = tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], list[str]]


def replay(publishes: list[Any]) -> Replayed:
    """What ThingsBoard would have: telemetry per device in order, merged attributes, connect order."""
    telemetry: dict[str, list[dict[str, Any]]] = {}
    attributes: dict[str, dict[str, Any]] = {}
    connects: list[str] = []
    for p in publishes:
        body = json.loads(p.payload)
        validate_message(p.topic, body)
        if p.topic == TOPIC_CONNECT:
            connects.append(body["device"])
        elif p.topic == TOPIC_TELEMETRY:
            for dev, entries in body.items():
                assert dev in connects, "data before connect"
                telemetry.setdefault(dev, []).extend(entries)
        elif p.topic == TOPIC_ATTRIBUTES:
            for dev, values in body.items():
                assert dev in connects, "data before connect"
                attributes.setdefault(dev, {}).update(values)
    return telemetry, attributes, connects


def test_many_events_packed_into_one_publish_per_topic() -> None:
    events = [(i, rec(f"d{i % 5}", [(i, {"v": i})], {"a": i})) for i in range(1, 201)]
    result = Packer(65536).pack(events, set())
    topics = [p.topic for p in result.publishes]
    assert topics == [TOPIC_CONNECT] * 5 + [TOPIC_ATTRIBUTES, TOPIC_TELEMETRY]
    telemetry, attributes, _ = replay(result.publishes)
    assert telemetry["d1"] == [{"ts": i, "values": {"v": i}} for i in range(1, 201) if i % 5 == 1]
    assert attributes["d0"] == {"a": 200}
    assert result.publishes[-1].through_id == 200
    assert result.dead_letters == []


def test_connect_once_per_device_per_session() -> None:
    announced: set[str] = set()
    packer = Packer()
    first = packer.pack([(1, rec("A", [(1, {"x": 1})])), (2, rec("A", [(2, {"x": 2})]))], announced)
    second = packer.pack([(3, rec("A", [(3, {"x": 3})])), (4, rec("B", [(4, {"x": 4})], dtype="Other"))],
                         announced)
    assert [json.loads(p.payload) for p in first.publishes if p.topic == TOPIC_CONNECT] == [
        {"device": "A", "type": "T"}]
    assert [json.loads(p.payload) for p in second.publishes if p.topic == TOPIC_CONNECT] == [
        {"device": "B", "type": "Other"}]
    assert announced == {"A", "B"}


def test_oversize_event_is_split_and_an_impossible_value_dead_lettered() -> None:
    values = {f"k{i:03}": "v" * 100 for i in range(50)}
    values["huge"] = "z" * 5000
    result = Packer(1024).pack([(7, rec("big", [(123, values)]))], set())
    assert all(packet_size(p.topic, p.payload) <= 1024 for p in result.publishes)
    telemetry, _, _ = replay(result.publishes)
    assert all(e["ts"] == 123 for e in telemetry["big"])
    merged = {k: v for e in telemetry["big"] for k, v in e["values"].items()}
    assert merged == {k: v for k, v in values.items() if k != "huge"}
    assert len(result.dead_letters) == 1
    assert result.dead_letters[0].event_id == 7 and result.dead_letters[0].content["key"] == "huge"
    assert result.publishes[-1].through_id == 7
    assert all(p.through_id is None for p in result.publishes[:-1])


def test_invalid_records_are_dead_lettered_not_dropped() -> None:
    events = [(1, b"not json"), (2, json.dumps({"device": "", "telemetry": []}).encode()),
              (3, json.dumps({"device": "x", "telemetry": [{"ts": "1", "values": {}}]}).encode()),
              (4, rec("ok", [(1, {"nan": float("nan")})])),
              (5, rec("ok", [(2, {"v": 1})]))]
    result = Packer().pack(events, set())
    assert [d.event_id for d in result.dead_letters] == [1, 2, 3, 4]
    assert result.ready_through == 4  # nothing to wait for before event 5
    telemetry, _, _ = replay(result.publishes)
    assert telemetry == {"ok": [{"ts": 2, "values": {"v": 1}}]}


def test_datapoint_cap_splits_messages() -> None:
    events = [(i, rec("d", [(i, {"a": 1, "b": 2, "c": 3})])) for i in range(1, 11)]
    result = Packer(65536, max_datapoints=7).pack(events, set())
    tele = [p for p in result.publishes if p.topic == TOPIC_TELEMETRY]
    assert all(p.datapoints <= 7 for p in tele)
    assert sum(p.datapoints for p in tele) == 30
    single = Packer(65536, max_datapoints=2).pack([(1, rec("d", [(1, {"a": 1, "b": 2, "c": 3})]))], set())
    assert [p.datapoints for p in single.publishes if p.topic == TOPIC_TELEMETRY] == [2, 1]


def test_through_id_never_covers_an_event_with_parts_still_to_come() -> None:
    big = {f"k{i}": "x" * 200 for i in range(20)}
    events = [(1, rec("a", [(1, {"v": 1})])), (2, rec("b", [(2, big)])), (3, rec("a", [(3, {"v": 3})]))]
    result = Packer(1500).pack(events, set())
    last_part: dict[int, int] = {}
    for index, p in enumerate(result.publishes):
        for _dev, entries in json.loads(p.payload).items() if p.topic == TOPIC_TELEMETRY else ():
            for e in entries:
                last_part[e["ts"]] = index
    for index, p in enumerate(result.publishes):
        if p.through_id is not None:
            assert all(last_part[e] <= index for e in range(1, p.through_id + 1))


def test_validate_message_rejects_what_thingsboard_would_disconnect_for() -> None:
    with pytest.raises(ValueError):
        validate_message(TOPIC_TELEMETRY, {"": [{"ts": 1, "values": {}}]})
    with pytest.raises(ValueError):
        validate_message(TOPIC_TELEMETRY, {"d": {"ts": 1}})
    with pytest.raises(ValueError):
        validate_message(TOPIC_TELEMETRY, {"d": [{"ts": "1", "values": {}}]})
    with pytest.raises(ValueError):
        validate_message(TOPIC_ATTRIBUTES, {"d": [1]})
    with pytest.raises(ValueError):
        rpc_reply_publish("d", "7", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rpc_reply_publish("", 7, {})
    with pytest.raises(ValueError):
        connect_publish(" ", "T")
    assert json.loads(rpc_reply_publish("d", 7, {"ok": True}).payload) == {"device": "d", "id": 7,
                                                                          "data": {"ok": True}}


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=300)
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=8)
value_maps = st.dictionaries(st.text(min_size=1, max_size=40),
                             json_values | st.text(min_size=300, max_size=1500), max_size=8)
events_strategy = st.lists(st.tuples(st.sampled_from(["a", "b", "ü-device", "x" * 60]),
                                     st.lists(st.tuples(st.integers(0, 2**41), value_maps), max_size=3),
                                     st.one_of(st.none(), value_maps)), max_size=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events_strategy, st.sampled_from([700, 2048, 65536]), st.sampled_from([None, 5]))
def test_packing_never_exceeds_the_limit_and_loses_nothing(raw: list[Any], limit: int,
                                                           max_dp: int | None) -> None:
    events = [(i + 1, rec(dev, entries, attrs)) for i, (dev, entries, attrs) in enumerate(raw)]
    result = Packer(limit, max_dp).pack(events, set())
    for p in result.publishes:
        assert packet_size(p.topic, p.payload) <= limit
        if max_dp is not None and p.topic == TOPIC_TELEMETRY:
            assert p.datapoints <= max_dp
    telemetry, attributes, connects = replay(result.publishes)
    assert len(connects) == len(set(connects))
    # a telemetry dead letter names the one value that can never fit (the same key may fit at another ts)
    dead = {(d.content["device"], d.content["key"], json.dumps(d.content["value"], sort_keys=True))
            for d in result.dead_letters if d.reason.startswith("telemetry")}
    dead_attrs = {(d.content["device"], d.content["key"]) for d in result.dead_letters
                  if d.reason.startswith("attribute")}
    for dev in {e[0] for e in raw}:
        # telemetry: every (ts, key, value) arrives, in the device's order, unless dead-lettered
        expected = [(ts, k, v) for d, entries, _ in raw if d == dev for ts, vals in entries
                    for k, v in vals.items() if (dev, k, json.dumps(v, sort_keys=True)) not in dead]
        got = [(e["ts"], k, v) for e in telemetry.get(dev, []) for k, v in e["values"].items()]
        assert got == expected
        merged: dict[str, Any] = {}
        for d, _, attrs in raw:
            if d == dev and attrs:
                merged.update(attrs)
        assert attributes.get(dev, {}) == {k: v for k, v in merged.items() if (dev, k) not in dead_attrs}
    if events:  # once everything is acked, the whole batch may leave storage
        covered = [t for t in [result.ready_through] + [p.through_id for p in result.publishes] if t]
        assert max(covered) == len(events)
