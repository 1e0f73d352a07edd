"""Plain counters the hot paths update cheaply, read by the admin /metrics collector at scrape time.

Nothing here knows Prometheus: a :class:`Histogram` is a list of bucket counts and a sum, updated
with one ``bisect`` and two additions. Callers update it from one thread or under their own lock;
a scrape copies it (a scrape racing an update may see the sum one observation ahead of the counts).
"""
from __future__ import annotations

from bisect import bisect_left

#: upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket (``le`` bounds, then +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> tuple[tuple[float, ...], list[int], float]:
        """(bounds, per-bucket counts, sum): a copy, safe to read while observations go on."""
        return self.bounds, list(self.counts), self.sum
