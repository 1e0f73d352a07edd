"""The stored record format: line layout written by encode_record, spliced by the packer; plain JSON still read."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.model import ConvertedData, TelemetryEntry
from gateway.northbound.packing import Packer, PackResult
from gateway.northbound.publishes import TOPIC_ATTRIBUTES, TOPIC_TELEMETRY
from gateway.uplink import encode_record


def plain(data: ConvertedData) -> bytes:
    """A record as the previous version stored it: compact JSON of to_record()."""
    return json.dumps(data.to_record(), separators=(",", ":"), ensure_ascii=False).encode()


def pack(payloads: list[bytes], packer: Packer | None = None) -> PackResult:
    return (packer or Packer()).pack(list(enumerate(payloads, 1)), set())


def wire(result: PackResult) -> list[tuple[str, bytes, int, int | None]]:
    return [(p.topic, p.payload, p.datapoints, p.through_id) for p in result.publishes]


def letters(result: PackResult) -> list[tuple[int | None, str]]:
    return [(d.event_id, d.reason) for d in result.dead_letters]


SAMPLE = [
    ConvertedData("SN-1", "Thermo", {"model": "T1", "fw": 2}, [TelemetryEntry(1000, {"t": 21.5, "h": 40})]),
    ConvertedData("SN-1", "Thermo", {"model": "T1", "fw": 2}, [TelemetryEntry(2000, {"t": 22.0})]),
    ConvertedData("Zählerstand \"7\"\n", "Zähler", {}, [TelemetryEntry(1500, {"kWh": 1.25e3, "ok": True}),
                                                         TelemetryEntry(1600, {}),
                                                         TelemetryEntry(1700, {"note": None, "nested": {"a": [1]}})]),
    ConvertedData("SN-1", "Thermo", {"fw": 3, "site": "north"}),  # attributes only, changed values
    ConvertedData("SN-2", "", {}, []),  # nothing to send
]


def test_stored_record_is_json_of_to_record_plus_datapoint_counts() -> None:
    for data in SAMPLE:
        record = json.loads(encode_record(data))
        counts = record.pop("dp", [])
        assert record == data.to_record()
        assert counts == [len(e.values) for e in data.telemetry if e.values]


def test_line_layout_packs_exactly_like_the_plain_json_it_replaces() -> None:
    new, old = pack([encode_record(d) for d in SAMPLE]), pack([plain(d) for d in SAMPLE])
    assert wire(new) == wire(old) and letters(new) == letters(old) == []
    assert new.ready_through == old.ready_through and new.last_id == old.last_id == len(SAMPLE)
    attributes = [json.loads(p.payload) for p in new.publishes if p.topic == TOPIC_ATTRIBUTES]
    assert attributes == [{"SN-1": {"model": "T1", "fw": 3, "site": "north"}}]  # merged, later values win


def test_records_of_the_previous_version_are_still_delivered_mixed_with_new_ones() -> None:
    mixed = [plain(d) if i % 2 else encode_record(d) for i, d in enumerate(SAMPLE)]
    assert wire(pack(mixed)) == wire(pack([plain(d) for d in SAMPLE]))


def test_datapoint_limit_uses_the_stored_counts() -> None:
    data = [ConvertedData("D", telemetry=[TelemetryEntry(i, {f"k{j}": j for j in range(i % 4 + 1)})])
            for i in range(1, 30)]
    packer = Packer(max_datapoints=5)
    new = pack([encode_record(d) for d in data], packer)
    assert wire(new) == wire(pack([plain(d) for d in data], packer))
    telemetry = [p for p in new.publishes if p.topic == TOPIC_TELEMETRY]
    assert len(telemetry) > 1 and all(p.datapoints <= 5 for p in telemetry)
    assert sum(p.datapoints for p in telemetry) == sum(i % 4 + 1 for i in range(1, 30))


def test_oversize_entries_are_split_and_values_that_never_fit_dead_lettered() -> None:
    big = {f"k{i}": "v" * 150 for i in range(20)}
    big["huge"] = "x" * 5000
    data = [ConvertedData("D", attributes={"a": "y" * 5000, "b": 1}, telemetry=[TelemetryEntry(7, big)])]
    packer = Packer(max_packet_bytes=1024)
    new = pack([encode_record(d) for d in data], packer)
    assert wire(new) == wire(pack([plain(d) for d in data], packer))
    assert sorted(reason.split(" (")[0] for _, reason in letters(new)) == [
        "attribute value too large for one message", "telemetry value too large for one message"]
    sent = [entry for p in new.publishes if p.topic == TOPIC_TELEMETRY for entry in json.loads(p.payload)["D"]]
    assert len(sent) > 1 and all(e["ts"] == 7 for e in sent)
    assert {k for e in sent for k in e["values"]} == set(big) - {"huge"}


@pytest.mark.parametrize("payload, reason", [
    (b'{"device":""\n,"type":"T"\n}', "device name must be a non-empty string"),
    (b'{"device":"D"\n,"type":7\n}', "device type must be a string"),
    (b'{"device":"D"\n,"type":"T"\n,"dp":[1]\n,"telemetry":[\n{"ts":1,"values":{"a":1}}\n]', "Expecting"),
    (b"\x01binary", "invalid stored record"),
])
def test_broken_records_are_dead_lettered_not_sent(payload: bytes, reason: str) -> None:
    result = pack([payload, encode_record(SAMPLE[0])])
    assert [(event_id, reason in why) for event_id, why in letters(result)] == [(1, True)]
    assert [p.topic for p in result.publishes] == ["v1/gateway/connect", TOPIC_ATTRIBUTES, TOPIC_TELEMETRY]
    assert result.ready_through == 1  # the broken one can be trimmed at once


def test_lines_in_an_unexpected_order_are_read_as_json() -> None:
    reordered = b'{"device":"D"\n,"type":"T"\n,"telemetry":[{"ts":1,"values":{"a":1}}]\n,"attributes":{"b":2}\n}'
    expected = ConvertedData("D", "T", {"b": 2}, [TelemetryEntry(1, {"a": 1})])
    assert wire(pack([reordered])) == wire(pack([encode_record(expected)]))


def test_data_of_unexpected_types_is_stored_as_plain_json_and_checked_when_packing() -> None:
    odd = ConvertedData("D", telemetry=[TelemetryEntry(1.5, {"a": 1})])  # type: ignore[arg-type]
    stored = encode_record(odd)
    assert b"\n" not in stored and json.loads(stored) == odd.to_record()
    assert "ts: int" in letters(pack([stored]))[0][1]


def test_values_that_are_not_json_are_refused_when_storing() -> None:
    for bad in (float("nan"), object()):
        with pytest.raises(ValueError, match="device 'D'"):
            encode_record(ConvertedData("D", telemetry=[TelemetryEntry(1, {"v": bad})]))
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        encode_record(ConvertedData("D", attributes=loop))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
values = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
messages = st.builds(
    ConvertedData, st.sampled_from(["A", "B", "Ünï \"q\"\n", " c "]), st.sampled_from(["T", "", "Ty\tpe"]),
    values, st.lists(st.builds(TelemetryEntry, st.integers(0, 2**53), values), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=1, max_size=12), limit=st.sampled_from([300, 2048, 65536]),
       max_dp=st.sampled_from([None, 2]))
def test_any_batch_packs_the_same_from_either_format(batch: list[ConvertedData], limit: int,
                                                     max_dp: int | None) -> None:
    packer = Packer(max_packet_bytes=limit, max_datapoints=max_dp)
    new = packer.pack(list(enumerate([encode_record(d) for d in batch], 1)), set())
    old = Packer(max_packet_bytes=limit, max_datapoints=max_dp).pack(
        list(enumerate([plain(d) for d in batch], 1)), set())
    assert wire(new) == wire(old)
    assert letters(new) == letters(old)
    assert new.ready_through == old.ready_through
