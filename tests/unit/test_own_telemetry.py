"""The gateway's own telemetry as a stored event: packed alone on v1/devices/me/telemetry, in storage order."""
from __future__ import annotations

import json

import pytest

from gateway.northbound.own_telemetry import TOPIC_OWN_TELEMETRY, encode_own_telemetry
from gateway.northbound.packing import Packer
from gateway.northbound.publishes import TOPIC_TELEMETRY
from tests.unit.test_packing import rec


def test_own_telemetry_gets_its_own_publish_and_completes_in_order() -> None:
    own = encode_own_telemetry(1700000000000, {"eventsProduced": 3, "eventsSent": 2})
    events = [(1, rec("dev", [(1, {"t": 1})])), (2, own), (3, rec("dev", [(2, {"t": 2})]))]
    result = Packer().pack(events, set())
    mine = [p for p in result.publishes if p.topic == TOPIC_OWN_TELEMETRY]
    assert len(mine) == 1 and mine[0].telemetry and mine[0].datapoints == 2
    assert json.loads(mine[0].payload) == {"ts": 1700000000000, "values": {"eventsProduced": 3, "eventsSent": 2}}
    device = [p for p in result.publishes if p.topic == TOPIC_TELEMETRY]
    assert json.loads(device[0].payload) == {"dev": [{"ts": 1, "values": {"t": 1}}, {"ts": 2, "values": {"t": 2}}]}
    assert result.publishes[-1].through_id == 3 and not result.dead_letters
    assert mine[0].through_id is None or mine[0].through_id < 3  # event 3 waits for the device publish


def test_a_broken_own_record_is_dead_lettered_not_published() -> None:
    result = Packer().pack([(1, b'{"own":{"ts":"x","values":{}}}')], set())
    assert result.publishes == [] and len(result.dead_letters) == 1
    assert result.ready_through == 1  # removable: it can never be sent


def test_own_telemetry_needs_values() -> None:
    with pytest.raises(ValueError):
        encode_own_telemetry(1, {})
