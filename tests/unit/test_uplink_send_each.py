"""``Uplink.send_each`` over real memory storage: posts stored together take one token each from the
gateway-wide rate limit (``storage.rateLimit``), and only those past it are refused."""
from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.base import UplinkRateLimited, UplinkUnavailable
from converters.model import ConvertedData, TelemetryEntry
from gateway.config.model import StorageConfig
from gateway.rate_limit import RequestRateLimit
from gateway.storage.factory import create_storage
from gateway.uplink import GatewayUplink


class Northbound:
    """The outside world the uplink wakes after a commit (the MQTT sender)."""

    def __init__(self) -> None:
        self.notified = 0
        self.posted: list[str] = []

    def notify_stored(self) -> None:
        self.notified += 1

    def device_posted(self, devices: list[str], connector: str) -> None:
        self.posted += devices


def post(seq: int) -> ConvertedData:
    return ConvertedData("Dev", "t", telemetry=[TelemetryEntry(1, {"seq": seq})])


@pytest.fixture
def storage() -> Any:
    storage = create_storage(StorageConfig(type="memory", max_records=5))
    yield storage
    storage.close()


def stored_seqs(storage: Any) -> list[int]:
    return [json.loads(event.payload)["telemetry"][0]["values"]["seq"] for event in storage.peek(100)]


def test_each_post_takes_a_token_and_only_those_past_the_limit_are_refused(storage: Any) -> None:
    northbound = Northbound()
    limit = RequestRateLimit(requests=1, per_seconds=3600, burst=3)
    uplink = GatewayUplink(storage, northbound, rate_limit=limit).for_connector("REST")
    outcomes = uplink.send_each([post(1), post(2)])
    assert outcomes == [None, None] and northbound.notified == 1  # one commit for both
    outcomes = uplink.send_each([post(3), post(4), post(5)])
    assert outcomes[0] is None
    for refused in outcomes[1:]:
        assert isinstance(refused, UplinkRateLimited) and "storage.rateLimit" in refused.reason
        assert 1 <= refused.retry_after <= 3600
    assert stored_seqs(storage) == [1, 2, 3]
    assert uplink.events_produced == 3 and northbound.posted == ["Dev"] * 3
    assert uplink.send_each([post(6)])[0] is not None and northbound.notified == 2  # nothing to commit
    with pytest.raises(UplinkRateLimited):
        uplink.send([post(7)])  # the same limit as a request's send


def test_without_a_limit_all_are_stored_and_a_full_storage_refuses_the_whole_batch(storage: Any) -> None:
    uplink = GatewayUplink(storage, Northbound())
    assert uplink.send_each([post(n) for n in range(4)]) == [None] * 4
    with pytest.raises(UplinkUnavailable):
        uplink.send_each([post(10), post(11)])  # 6 > max_records 5: nothing of it stored
    assert stored_seqs(storage) == [0, 1, 2, 3]


def test_an_item_that_cannot_be_encoded_takes_no_token(storage: Any) -> None:
    limit = RequestRateLimit(requests=1, per_seconds=3600, burst=1)
    uplink = GatewayUplink(storage, Northbound(), rate_limit=limit)
    bad = ConvertedData("Dev", "t", telemetry=[TelemetryEntry(1, {"x": float("nan")})])
    with pytest.raises(ValueError):
        uplink.send_each([post(1), bad])
    assert uplink.send_each([post(2)]) == [None] and stored_seqs(storage) == [2]
