"""Every ``statsSendPeriodInSeconds``, the period's counts as the gateway device's own telemetry.

Keys are those of the ThingsBoard IoT Gateway 3.8.5 (docs/operations.md says how each is counted
here). The message is stored like device data (so it survives an outage and obeys ThingsBoard's
rate limits, as :mod:`gateway.northbound.own_telemetry` publishes it) but never crowds device data
out: it is one small event per period, it is not counted against ``storage.rateLimit``, and it is
skipped, not retried, while storage is at least :data:`SKIP_ABOVE` full or failing; the counts of a
skipped period are carried into the next message.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from gateway.config.model import StatisticsConfig, StorageConfig
from gateway.northbound.own_telemetry import encode_own_telemetry
from gateway.statistics.counting import ConnectorCounts
from gateway.storage.base import EventStorage, StorageFailure, StorageFull

#: storage fill ratio (events or bytes) from which a statistics message is skipped, leaving room for device data
SKIP_ABOVE = 0.9
#: northbound counter → statistics key
NORTHBOUND_KEYS = (("published", "msgsSentToPlatform"), ("bytes_sent", "allBytesSentToTB"),
                   ("received", "msgsReceivedFromPlatform"), ("events_sent", "storageMsgPulled"))


def connector_key(name: str, suffix: str) -> str:
    """``REST Connector`` + ``EventsProduced`` → ``RESTConnectorEventsProduced`` (spaces removed, as 3.8.5)."""
    return name.replace(" ", "") + suffix


class StatisticsReporter:
    """Collects the counters and stores one statistics event per period (its own thread)."""

    def __init__(self, config: StatisticsConfig, storage: EventStorage, storage_config: StorageConfig,
                 northbound: Any, logger: logging.Logger) -> None:
        self.config = config
        self.storage = storage
        self.storage_config = storage_config
        self.northbound = northbound
        self.log = logger
        self.connectors: list[ConnectorCounts] = []
        self.sent = 0
        self.skipped = 0
        self._last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def counts_for(self, name: str) -> ConnectorCounts:
        """The counters of connector ``name`` (created once per name)."""
        for counts in self.connectors:
            if counts.name == name:
                return counts
        counts = ConnectorCounts(name)
        self.connectors.append(counts)
        return counts

    def totals(self) -> dict[str, int]:
        """Every statistics key's running total since the start."""
        totals: dict[str, int] = {"eventsProduced": 0, "eventsSent": 0, "platformTsProduced": 0,
                                  "platformAttrProduced": 0, "receivedBytesFromDevices": 0,
                                  "allBytesSentToDevices": 0}
        for counts in self.connectors:
            snap = counts.snapshot()
            totals[connector_key(counts.name, "EventsProduced")] = snap["produced"]
            totals[connector_key(counts.name, "EventsSent")] = snap["stored"]
            totals["eventsProduced"] += snap["produced"]
            totals["eventsSent"] += snap["stored"]
            totals["platformTsProduced"] += snap["timeseries"]
            totals["platformAttrProduced"] += snap["attributes"]
            totals["receivedBytesFromDevices"] += snap["bytes_received"]
            totals["allBytesSentToDevices"] += snap["bytes_sent"]
        northbound = self.northbound.stats()
        for counter, key in NORTHBOUND_KEYS:
            totals[key] = int(northbound.get(counter, 0))
        return totals

    def report(self) -> bool:
        """Store this period's message now; False when it was skipped (storage too full or failing)."""
        totals = self.totals()
        values = {key: value - self._last.get(key, 0) for key, value in totals.items()}
        why = self._crowded()
        if why is None:
            try:
                self.storage.put([encode_own_telemetry(int(time.time() * 1000), values)])
            except (StorageFull, StorageFailure) as exc:
                why = str(exc) or type(exc).__name__
        if why is not None:
            self.skipped += 1
            self.log.warning("statistics message skipped (its counts go into the next one): %s", why)
            return False
        self._last = totals
        self.sent += 1
        notify = getattr(self.northbound, "notify_stored", None)
        if notify is not None:
            notify()
        return True

    def _crowded(self) -> str | None:
        """Why device data needs the room now, or None."""
        try:
            stats = self.storage.stats() if hasattr(self.storage, "stats") else {"stored": self.storage.count()}
        except Exception as exc:  # closed or failing storage
            return f"storage does not answer ({exc})"
        if stats.get("failing"):
            return "storage's last commit failed"
        limits = self.storage_config
        if stats.get("stored", 0) >= SKIP_ABOVE * limits.max_records or \
                stats.get("bytes", 0) >= SKIP_ABOVE * limits.max_size_mb * 1024 * 1024:
            return f"storage is over {SKIP_ABOVE:.0%} full: the room is kept for device data"
        return None

    def start(self) -> None:
        """Report every period from a background thread, the first message one period after the start."""
        self._last = self.totals()
        self._thread = threading.Thread(target=self._run, name="rgw-statistics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.period_seconds):
            try:
                self.report()
            except Exception:  # a bug here must never stop the gateway
                self.log.exception("statistics message failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
