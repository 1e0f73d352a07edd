"""Per-connector counts for the statistics telemetry: messages produced and stored, their data points, bytes.

With statistics on, each connector's :class:`~gateway.uplink.ConnectorUplink` holds one
:class:`ConnectorCounts` and counts every ``send`` into it, so connectors stay unaware of them:
per ``send`` one lock and a few additions. A connector that sees device traffic as bytes finds the
same object as ``uplink.counts`` (None with statistics off) and adds what it received from devices
(:meth:`ConnectorCounts.received_bytes`) and sent to them (:meth:`ConnectorCounts.sent_bytes`).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

from converters.model import ConvertedData


class ConnectorCounts:
    """Running totals of one connector since the start (thread-safe)."""

    KEYS = ("produced", "stored", "timeseries", "attributes", "bytes_received", "bytes_sent")

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

    def refused(self, data: Sequence[ConvertedData]) -> None:
        """``data`` was offered but not stored (storage refused it): produced, not sent."""
        self.add(len(data), 0, 0, 0)

    def stored(self, data: Sequence[ConvertedData]) -> None:
        """``data`` was stored: produced and sent, with its telemetry values and attribute keys."""
        timeseries = attributes = 0
        for item in data:  # a plain loop: about twice as fast as two generator sums on this hot path
            attributes += len(item.attributes)
            for entry in item.telemetry:
                timeseries += len(entry.values)
        self.add(len(data), len(data), timeseries, attributes)

    def received_bytes(self, size: int) -> None:
        """``size`` bytes of request bodies arrived from devices."""
        with self._lock:
            self._totals["bytes_received"] += size

    def sent_bytes(self, size: int) -> None:
        """``size`` bytes of request bodies reached devices (a downlink relay's target answered)."""
        with self._lock:
            self._totals["bytes_sent"] += size

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)
