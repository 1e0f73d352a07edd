"""Request counters of one REST connector: plain dicts the request path bumps, read at scrape time.

Per request: one dict increment keyed by (endpoint, method, status) and one latency bucket,
under one lock (measured in bench/RESULTS.md). Labels are bounded: ``endpoint`` is a configured
endpoint or fixed route (never a device name or token), a request no route serves counts under
:data:`UNMATCHED`, and methods outside :data:`METHODS` count as ``other``.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

from gateway.stats import LATENCY_BUCKETS

UNMATCHED = "(unmatched)"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: converter errors kept for the status page, newest last
LAST_ERRORS = 20
#: bytes of a refused body kept with it: the status page redacts secrets in them, then shows an excerpt
BODY_BYTES = 4096


class RequestMetrics:
    """HTTP request counts and latencies by endpoint, converter errors by endpoint and reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        #: endpoint → bucket counts (LATENCY_BUCKETS, then +Inf), then the sum of seconds
        self.latency: dict[str, list[Any]] = {}
        self.converter_errors: dict[tuple[str, str], int] = {}
        self.last_errors: deque[dict[str, Any]] = deque(maxlen=LAST_ERRORS)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (the hot path: keep it this small)."""
        if method not in METHODS:
            method = "other"
        key = (endpoint, method, status)
        index = bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            requests = self.requests
            requests[key] = requests.get(key, 0) + 1
            histogram = self.latency.get(endpoint)
            if histogram is None:
                histogram = self.latency[endpoint] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
            histogram[index] += 1
            histogram[-1] += seconds

    def converter_error(self, endpoint: str, reason: str, message: str, body: bytes) -> None:
        """Count a request whose data could not be converted; keep it (with its body's start) for the status page.

        The body is kept as received (``body``, up to :data:`BODY_BYTES`, ``truncated`` if longer): whoever
        shows it redacts the secrets first (gateway/admin/redact.py).
        """
        with self._lock:
            key = (endpoint, reason)
            self.converter_errors[key] = self.converter_errors.get(key, 0) + 1
            self.last_errors.append({"time": time.time(), "endpoint": endpoint, "reason": reason,
                                     "message": message[:300], "body": bytes(body[:BODY_BYTES]),
                                     "truncated": len(body) > BODY_BYTES})

    def snapshot(self) -> dict[str, Any]:
        """Copies of every counter, for the collector and the status page."""
        with self._lock:
            return {"requests": dict(self.requests),
                    "latency": {endpoint: list(h) for endpoint, h in self.latency.items()},
                    "converter_errors": dict(self.converter_errors),
                    "last_errors": list(self.last_errors)}
