"""Token-bucket request rate limits with bounded memory: one bucket per key, at most ``max_keys`` of them.

A bucket holds up to ``capacity`` tokens and gains ``rate`` tokens a second; a request takes one
token or is refused with the seconds until one is back. Buckets live in an LRU of at most
``max_keys`` entries. Evicting the least recently used bucket is harmless when it is full (idle
for ``capacity / rate`` seconds or more): a full bucket and a fresh one are the same state. Only
when more than ``max_keys`` keys were all active within that refill time does an eviction forget a
partly drained bucket, which hands that key up to ``capacity`` extra requests; the global limit
(gateway.yaml ``storage.rateLimit``) still bounds the total. docs/security.md explains the choice.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config.document import Problems
from gateway.config.locate import join

BY_KEYS = ("endpoint", "client", "device")


@dataclass(frozen=True, slots=True)
class RequestRateLimit:
    """``requests`` per ``per_seconds``, up to ``burst`` at once, one bucket per ``by`` key."""

    requests: float
    per_seconds: float = 1.0
    burst: int = 0  # 0: the default, ``requests`` rounded up
    by: str = "endpoint"  # "endpoint" | "client" | "device"
    max_keys: int = 10_000

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.requests / self.per_seconds

    @property
    def capacity(self) -> int:
        """Most requests let through at once after a quiet period."""
        return self.burst or max(1, math.ceil(self.requests))


def read_rate_limit(section: Any, pointer: str, problems: Problems,
                    by_keys: tuple[str, ...] = BY_KEYS) -> RequestRateLimit | None:
    """The limit of a ``rateLimit`` config object (types already checked by the schema); ``None`` if absent."""
    if not isinstance(section, dict):
        return None
    requests, per = section.get("requests"), section.get("perSeconds", 1)
    if not _positive(requests) or not _positive(per):
        return None  # the schema has reported it
    burst = section.get("burst", 0)
    burst = burst if isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1 else 0
    by = section.get("by", "endpoint")
    if by not in by_keys:
        if "by" in section and isinstance(by, str):
            problems.error(join(pointer, "by"), f"rateLimit by {by!r} is not available here", " or ".join(by_keys))
        by = "endpoint"
    max_keys = section.get("maxKeys", 10_000)
    max_keys = max_keys if isinstance(max_keys, int) and not isinstance(max_keys, bool) and max_keys > 0 else 10_000
    return RequestRateLimit(requests=float(requests), per_seconds=float(per), burst=burst, by=by,
                            max_keys=max_keys)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


class RateLimited(Exception):
    """Over the limit: retry after ``retry_after`` whole seconds (at least 1)."""

    def __init__(self, retry_after: int, key: str = "") -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.retry_after = retry_after
        self.key = key


class TokenBuckets:
    """The buckets of one limit; thread-safe, memory bounded by ``limit.max_keys``."""

    def __init__(self, limit: RequestRateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._rate = limit.rate
        self._capacity = float(limit.capacity)
        self._max_keys = max(1, limit.max_keys)
        self._clock = clock
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # key → [tokens, at]
        self._lock = threading.Lock()
        self.evicted = 0  # buckets dropped to stay within max_keys (counted for tests and stats)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, keys: Sequence[Hashable] = ("",)) -> None:
        """Take one token from the bucket of each of ``keys``, all or none; raises :class:`RateLimited`."""
        now = self._clock()
        with self._lock:
            buckets = [self._bucket(key, now) for key in dict.fromkeys(keys)]
            short = [b for b in buckets if b[0] < 1.0]
            if short:
                wait = max((1.0 - b[0]) / self._rate for b in short)
                raise RateLimited(max(1, math.ceil(wait)))
            for bucket in buckets:
                bucket[0] -= 1.0

    def take_up_to(self, count: int, key: Hashable = "") -> tuple[int, int]:
        """Take up to ``count`` tokens from ``key``'s bucket: (how many were taken, the whole seconds
        until the next one is back, at least 1). For work that counts as ``count`` requests at once."""
        now = self._clock()
        with self._lock:
            bucket = self._bucket(key, now)
            taken = max(0, min(count, int(bucket[0])))
            bucket[0] -= taken
            wait = (1.0 - bucket[0]) / self._rate if bucket[0] < 1.0 else 0.0
        return taken, max(1, math.ceil(wait))

    def _bucket(self, key: Hashable, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self._capacity, now]
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
                self.evicted += 1
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self._capacity, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[1] = now
        return bucket
