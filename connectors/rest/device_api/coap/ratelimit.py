"""Per-source-address token buckets, bounded in memory: a UDP server must not answer floods."""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from connectors.rest.device_api.model import CoapRateLimit


class AddressLimiter:
    """``allow(address)`` is True while the address has tokens. Only the event loop thread calls it.

    At most ``max_addresses`` buckets are kept, least recently used first out. An evicted address
    comes back with a full bucket, which is at most ``burst`` extra requests: the cap bounds memory,
    the bucket bounds each address's rate while it is active.
    """

    def __init__(self, limit: CoapRateLimit, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = limit.requests / limit.per_seconds
        self.burst = float(limit.burst)
        self.max_addresses = limit.max_addresses
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # address -> [tokens, last refill]
        self._now = now
        self.refused = 0

    def allow(self, address: str) -> bool:
        now = self._now()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._buckets.popitem(last=False)
            bucket = self._buckets[address] = [self.burst, now]
        else:
            self._buckets.move_to_end(address)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        self.refused += 1
        return False

    def retry_after(self) -> int:
        """Whole seconds until one token is back (at least 1)."""
        return max(1, int(1 / self.rate + 0.999))

    def __len__(self) -> int:
        return len(self._buckets)
