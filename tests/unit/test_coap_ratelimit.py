"""The CoAP per-source-address rate limit (AddressLimiter): a token bucket per address, refilled at
``requests / perSeconds``, its Max-Age, and memory bounded by ``maxAddresses`` whatever the sources."""
from __future__ import annotations

import tracemalloc

import pytest

from connectors.rest.device_api.coap.ratelimit import AddressLimiter
from connectors.rest.device_api.model import CoapRateLimit


def limiter(clock: list[float], **limit: float) -> AddressLimiter:
    return AddressLimiter(CoapRateLimit(**limit), now=lambda: clock[0])  # type: ignore[arg-type]


def test_a_burst_is_let_through_then_the_address_is_refused_until_tokens_come_back() -> None:
    clock = [0.0]
    limits = limiter(clock, requests=2, per_seconds=1, burst=5)
    assert [limits.allow("10.0.0.1") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limits.refused == 2
    clock[0] = 0.25  # half a token back: not yet one
    assert not limits.allow("10.0.0.1")
    clock[0] = 0.6  # 1.2 tokens (0.6 s at 2/s): the refused request took none
    assert limits.allow("10.0.0.1") and not limits.allow("10.0.0.1")
    clock[0] = 100.0  # a long quiet period refills the bucket to the burst, not beyond
    assert sum(limits.allow("10.0.0.1") for _ in range(10)) == 5


def test_addresses_have_buckets_of_their_own() -> None:
    clock = [0.0]
    limits = limiter(clock, requests=1, per_seconds=60, burst=2)
    assert [limits.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert [limits.allow("10.0.0.2") for _ in range(3)] == [True, True, False]
    assert not limits.allow("10.0.0.1")


@pytest.mark.parametrize(("requests", "per_seconds", "max_age"), [
    (1000, 1, 1),  # a token every millisecond: Max-Age is at least 1
    (1, 1, 1),
    (1, 60, 60),
    (2, 5, 3),  # 2.5 s: rounded up, so a device that waits Max-Age finds a token
    (3, 3600, 1200),
])
def test_max_age_is_the_whole_seconds_until_a_token_is_back(requests: int, per_seconds: float, max_age: int) -> None:
    clock = [0.0]
    limits = limiter(clock, requests=requests, per_seconds=per_seconds, burst=1)
    assert limits.allow("10.0.0.1") and not limits.allow("10.0.0.1")
    assert limits.retry_after() == max_age
    clock[0] = float(max_age)
    assert limits.allow("10.0.0.1")


def test_buckets_are_bounded_least_recently_used_first_out() -> None:
    clock = [0.0]
    limits = limiter(clock, requests=1, per_seconds=60, burst=1, max_addresses=3)
    for address in ("a", "b", "c"):
        assert limits.allow(address)
    assert not limits.allow("a")  # a is now the most recently used: b goes first
    assert limits.allow("d") and len(limits) == 3
    assert not limits.allow("a") and not limits.allow("c")  # kept, still empty
    assert limits.allow("b")  # evicted: back with a full bucket (the documented cost of the bound)
    assert len(limits) == 3


def test_memory_is_bounded_whatever_the_number_of_addresses() -> None:
    clock = [0.0]
    limits = limiter(clock, max_addresses=1000)
    tracemalloc.start()
    try:
        for number in range(1000):
            limits.allow(f"10.0.{number >> 8}.{number & 255}")
        full = tracemalloc.get_traced_memory()[0]
        for number in range(1000, 50_000):  # a spoofed flood from 49,000 more addresses
            limits.allow(f"10.{number >> 16}.{number >> 8 & 255}.{number & 255}")
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(limits) == 1000
    assert after - full < 50_000  # no growth past the cap beyond noise (1000 buckets take ~250 KB)
