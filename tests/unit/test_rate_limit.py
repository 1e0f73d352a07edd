"""The token buckets on a controlled clock: burst, refill, Retry-After, all-or-none, and bounded memory."""
from __future__ import annotations

import sys
import tracemalloc

import pytest

from gateway.rate_limit import RateLimited, RequestRateLimit, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_and_retry_after() -> None:
    clock = Clock()
    buckets = TokenBuckets(RequestRateLimit(requests=2, per_seconds=10, burst=3), clock)
    for _ in range(3):
        buckets.take()
    with pytest.raises(RateLimited) as refused:
        buckets.take()
    assert refused.value.retry_after == 5  # one token every 5 s
    clock.now += 4.9
    with pytest.raises(RateLimited) as refused:
        buckets.take()
    assert refused.value.retry_after == 1  # never 0: a client told 0 would retry at once
    clock.now += 0.1
    buckets.take()
    clock.now += 1000  # a long pause refills up to the burst, not beyond
    for _ in range(3):
        buckets.take()
    with pytest.raises(RateLimited):
        buckets.take()


def test_take_up_to_takes_the_tokens_there_are_and_says_when_the_next_is_back() -> None:
    clock = Clock()
    buckets = TokenBuckets(RequestRateLimit(requests=2, per_seconds=10, burst=3), clock)
    assert buckets.take_up_to(2) == (2, 1)  # one token left: the next is there now (at least 1 s is said)
    assert buckets.take_up_to(5) == (1, 5)  # the last one; the next in 5 s
    assert buckets.take_up_to(5) == (0, 5)
    clock.now += 5.0
    assert buckets.take_up_to(5) == (1, 5)
    with pytest.raises(RateLimited):
        buckets.take()  # one bucket, whichever way it is taken from


def test_default_burst_is_requests_rounded_up() -> None:
    assert RequestRateLimit(requests=100).capacity == 100
    assert RequestRateLimit(requests=0.5, per_seconds=1).capacity == 1
    assert RequestRateLimit(requests=2.5, burst=7).capacity == 7


def test_several_keys_all_or_none() -> None:
    clock = Clock()
    buckets = TokenBuckets(RequestRateLimit(requests=1, per_seconds=60, burst=1, by="device"), clock)
    buckets.take(["a"])
    with pytest.raises(RateLimited):
        buckets.take(["b", "a"])  # a is empty: b must keep its token
    buckets.take(["b"])
    buckets.take(["c", "c"])  # a key named twice in one request takes one token


def test_memory_is_bounded_with_many_keys_and_the_recently_used_buckets_are_kept() -> None:
    clock = Clock()
    buckets = TokenBuckets(RequestRateLimit(requests=1, per_seconds=1, burst=5, by="client", max_keys=1000), clock)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(100_000):  # a hundred times the cap: e.g. spoofed or rotating client addresses
        clock.now += 0.001
        buckets.take([f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"])
    used = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(buckets) == 1000 and buckets.evicted == 99_000
    assert used < 1000 * 400, used  # ~200-300 bytes a bucket, whatever the number of clients
    print(f"rate limiter: {used / 1000:.0f} bytes per bucket", file=sys.stderr)
    # the most recently used keys are kept: a busy client cannot escape its limit by others' traffic
    busy = "10.1.134.159"  # the last key above
    for _ in range(4):
        buckets.take([busy])
    with pytest.raises(RateLimited):
        buckets.take([busy])
