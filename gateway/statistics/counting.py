"""Per-connector counts for the statistics: an :class:`~connectors.base.Uplink` that counts what passes.

The daemon gives each connector a :class:`CountingUplink` over the shared gateway uplink when
statistics are on, so connectors stay unaware of them: per ``send`` one lock and a few additions.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from connectors.base import Uplink
from converters.model import ConvertedData
from gateway.receipts import Receipt


class ConnectorCounts:
    """Running totals of one connector since the start (thread-safe)."""

    KEYS = ("produced", "stored", "timeseries", "attributes")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(self.KEYS, 0)

    def add(self, produced: int, stored: int, timeseries: int, attributes: int) -> None:
        with self._lock:
            totals = self._totals
            totals["produced"] += produced
            totals["stored"] += stored
            totals["timeseries"] += timeseries
            totals["attributes"] += attributes

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)


class CountingUplink:
    """Delegates to ``inner``; counts converted messages offered (produced) and stored, and their data points."""

    def __init__(self, inner: Uplink, counts: ConnectorCounts) -> None:
        self.inner = inner
        self.counts = counts

    def send(self, data: Sequence[ConvertedData], receipt: Receipt | None = None) -> None:
        try:
            self.inner.send(data, receipt)
        except Exception:
            self.counts.add(len(data), 0, 0, 0)
            raise
        timeseries = attributes = 0
        for item in data:  # a plain loop: about twice as fast as two generator sums on this hot path
            attributes += len(item.attributes)
            for entry in item.telemetry:
                timeseries += len(entry.values)
        self.counts.add(len(data), len(data), timeseries, attributes)

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        self.inner.publish_rpc_reply(device, request_id, data)

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def find_receipt(self, scope: str, key: str) -> Receipt | None:
        return self.inner.find_receipt(scope, key)

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        return self.inner.client_rpc(method, params, timeout)

    def claim(self, device: str, secret_key: str, duration_ms: int) -> None:
        self.inner.claim(device, secret_key, duration_ms)

    def request_attributes(self, device: str, client: bool, keys: list[str], timeout: float) -> dict[str, Any] | None:
        return self.inner.request_attributes(device, client, keys, timeout)
