"""``reportStrategy``: which converted values of a mapping are sent, decided when a request arrives.

Strategies (the reference's names): ``ON_RECEIVED`` (every value, the default), ``ON_CHANGE`` (a
value only when it differs from the last one sent for that device and key), ``ON_REPORT_PERIOD``
(at most one value per ``reportPeriod`` ms per device and key), ``ON_CHANGE_OR_REPORT_PERIOD`` (a
changed value at once, an unchanged one again once ``reportPeriod`` has passed), ``DISABLED``
(never). A mapping's strategy applies to all its keys; a data point's own ``reportStrategy`` wins.

Decisions are made on receipt only: nothing is held back in memory to be sent later, so a 200 still
means that whatever is sent is stored durably, and a value left out is left out by policy. The
state (last value and send time per device and key) is bounded by ``max_keys``: the least recently
used entry is forgotten first, and a forgotten key's next value is sent (the strategy errs towards
sending, never towards losing). The state is updated only after the data is stored, so a request
refused with 503 does not make its values count as sent.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters.model import ConvertedData

STRATEGIES = ("ON_RECEIVED", "ON_CHANGE", "ON_REPORT_PERIOD", "ON_CHANGE_OR_REPORT_PERIOD", "DISABLED")
PERIODIC = ("ON_REPORT_PERIOD", "ON_CHANGE_OR_REPORT_PERIOD")
DEFAULT_REPORT_PERIOD_MS = 10_000
DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Strategy:
    """One ``reportStrategy`` object: its type and period (milliseconds)."""

    type: str = "ON_RECEIVED"
    period_ms: int = DEFAULT_REPORT_PERIOD_MS

    @classmethod
    def from_dict(cls, data: Any) -> Strategy | None:
        """The strategy written in ``data`` (validated by the schema), None when there is none."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return None
        period = data.get("reportPeriod", DEFAULT_REPORT_PERIOD_MS)
        ok = isinstance(period, int) and not isinstance(period, bool) and period > 0
        return cls(data["type"].upper(), period if ok else DEFAULT_REPORT_PERIOD_MS)


@dataclass(frozen=True, slots=True)
class MappingStrategies:
    """A mapping's strategies: its own (or its converter section's) and those of its constant keys."""

    default: Strategy
    attributes: dict[str, Strategy]
    timeseries: dict[str, Strategy]

    @property
    def trivial(self) -> bool:
        """True when every value is sent as received (nothing to decide, no state)."""
        return self.default.type == "ON_RECEIVED" and not self.attributes and not self.timeseries


def mapping_strategies(entry_strategy: Any, converter: dict[str, Any]) -> MappingStrategies:
    """Read the strategies of one mapping (``entry_strategy``: its ``reportStrategy`` as written)."""
    default = Strategy.from_dict(entry_strategy) or Strategy.from_dict(converter.get("reportStrategy")) \
        or Strategy()
    by_kind: dict[str, dict[str, Strategy]] = {"attributes": {}, "timeseries": {}}
    for kind, found in by_kind.items():
        points = converter.get(kind)
        for point in points if isinstance(points, list) else ():
            if isinstance(point, dict) and isinstance(point.get("key"), str):
                strategy = Strategy.from_dict(point.get("reportStrategy"))
                if strategy is not None:
                    found[point["key"]] = strategy
    return MappingStrategies(default, by_kind["attributes"], by_kind["timeseries"])


def _marker(value: Any) -> tuple[type, Any]:
    """What "the same value" means: equal and of the same type (1, 1.0 and true differ)."""
    return (type(value), repr(value) if isinstance(value, dict | list) else value)


class ReportFilter:
    """Applies one mapping's strategies to converted data; thread-safe, bounded by ``max_keys``."""

    def __init__(self, strategies: MappingStrategies, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.strategies = strategies
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str, str], tuple[tuple[type, Any], float]] = OrderedDict()
        self.counts = {"sent": 0, "left_out": 0, "forgotten": 0}

    def apply(self, items: list[ConvertedData]) -> list[tuple[tuple[str, str, str], tuple[type, Any], float]]:
        """Remove from ``items`` (in place) the values the strategies leave out; returns the state
        updates to :meth:`commit` once the remaining data is stored."""
        now = self._clock()
        updates: list[tuple[tuple[str, str, str], tuple[type, Any], float]] = []
        left_out = 0
        with self._lock:
            for item in items:
                kept = self._filter(item.device_name, "attributes", item.attributes, now, updates)
                left_out += len(item.attributes) - len(kept)
                item.attributes = kept
                for entry in item.telemetry:
                    kept = self._filter(item.device_name, "timeseries", entry.values, now, updates)
                    left_out += len(entry.values) - len(kept)
                    entry.values = kept
            self.counts["left_out"] += left_out
        return updates

    def _filter(self, device: str, kind: str, values: dict[str, Any], now: float,
                updates: list[tuple[tuple[str, str, str], tuple[type, Any], float]]) -> dict[str, Any]:
        by_key = self.strategies.attributes if kind == "attributes" else self.strategies.timeseries
        kept: dict[str, Any] = {}
        for key, value in values.items():
            strategy = by_key.get(key, self.strategies.default)
            kind_name = strategy.type
            if kind_name == "ON_RECEIVED":
                kept[key] = value
                continue
            if kind_name == "DISABLED":
                continue
            state_key = (device, kind, key)
            marker = _marker(value)
            last = self._last.get(state_key)
            if last is not None:
                self._last.move_to_end(state_key)  # recently received keys are kept longest
            due = last is None or (now - last[1]) * 1000 >= strategy.period_ms
            changed = last is None or last[0] != marker
            if kind_name == "ON_CHANGE":
                send = changed
            elif kind_name == "ON_REPORT_PERIOD":
                send = due
            else:  # ON_CHANGE_OR_REPORT_PERIOD
                send = changed or due
            if send:
                kept[key] = value
                updates.append((state_key, marker, now))
        return kept

    def commit(self, updates: list[tuple[tuple[str, str, str], tuple[type, Any], float]]) -> None:
        """Record the values of ``updates`` as sent (after they were stored)."""
        if not updates:
            return
        with self._lock:
            for state_key, marker, when in updates:
                self._last[state_key] = (marker, when)
                self._last.move_to_end(state_key)
            self.counts["sent"] += len(updates)
            while len(self._last) > self.max_keys:
                self._last.popitem(last=False)
                self.counts["forgotten"] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"tracked_keys": len(self._last), "max_keys": self.max_keys, **self.counts}
