"""Report marks: the last value reported for one key of one device, stored with the event that carries it.

A connector that applies a ``reportStrategy`` (ON_CHANGE, ON_REPORT_PERIOD, ...) decides from the last
value it reported for a device and key, and when. To survive a restart that state is handed to the
storage with the data, as :class:`ReportMark` rows, and written in the same transaction as the events:
a mark is durable exactly when the value it records is, so a crash can neither make a change count as
reported without it being stored (a lost change) nor store it without the mark (a change reported twice
after the restart). The sqlite backend keeps at most ``max_keys`` marks per ``scope``, the least recently
reported first out; the memory backend keeps none (the connector's own memory is the state). This module
is only the shape; see gateway/storage/.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReportMark:
    """One key of one device: the value last reported (as the connector compares it) and when."""

    scope: str  # whose state (for the REST connector: the connector name and the mapping's endpoint)
    device: str
    kind: str  # "attributes" or "timeseries"
    key: str
    value: str  # the connector's marker of the value (type and value, as text)
    sent_at: float  # Unix time the value was reported
    max_keys: int = 100_000  # marks kept in this scope; the least recently reported are evicted first
