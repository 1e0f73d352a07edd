"""``reportStrategy``: which converted values of a mapping are sent, decided when a request arrives.

Strategies (the reference's names): ``ON_RECEIVED`` (every value, the default), ``ON_CHANGE`` (a
value only when it differs from the last one sent for that device and key), ``ON_REPORT_PERIOD``
(at most one value per ``reportPeriod`` ms per device and key), ``ON_CHANGE_OR_REPORT_PERIOD`` (a
changed value at once, an unchanged one again once ``reportPeriod`` has passed), ``DISABLED``
(never). Which one applies to a key, most specific first: the data point's own, the mapping's (or
its converter section's), the connector's (rest.json top level), the gateway's (gateway.yaml
``thingsboard.reportStrategy``), else ``ON_RECEIVED``.

Decisions are made on receipt only: nothing is held back in memory to be sent later, so a 200 still
means that whatever is sent is stored durably, and a value left out is left out by policy. The
state (last value and send time per device and key) is kept in memory, bounded by ``max_keys`` (the
least recently used entry is forgotten first; a forgotten key's next value is sent: the strategy
errs towards sending, never towards losing), and handed to the storage with the data as
:class:`~gateway.report_marks.ReportMark` rows, written in the same transaction as the events
(sqlite), then read back at start: an unchanged value is not sent again after a restart, and a
period goes on where it was. The memory state is updated only after the data is stored, so a
request refused with 503 does not make its values count as sent. The requests of one device are
decided and stored one at a time (:meth:`ReportFilter.holding`), so two concurrent requests can
neither both report the same change nor leave the state older than what was stored last.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from converters.model import ConvertedData
from gateway.report_marks import ReportMark

STRATEGIES = ("ON_RECEIVED", "ON_CHANGE", "ON_REPORT_PERIOD", "ON_CHANGE_OR_REPORT_PERIOD", "DISABLED")
PERIODIC = ("ON_REPORT_PERIOD", "ON_CHANGE_OR_REPORT_PERIOD")
DEFAULT_REPORT_PERIOD_MS = 10_000
DEFAULT_MAX_KEYS = 100_000
#: locks the requests of one device are serialised by (a device name picks one by its hash)
_STRIPES = 64

StateKey = tuple[str, str, str]  # device, "attributes" | "timeseries", key
Update = tuple[StateKey, str, float]  # what commit() records: the key, the value's marker, when (Unix time)


@dataclass(frozen=True, slots=True)
class Strategy:
    """One ``reportStrategy`` object: its type and period (milliseconds)."""

    type: str = "ON_RECEIVED"
    period_ms: int = DEFAULT_REPORT_PERIOD_MS

    @classmethod
    def from_dict(cls, data: Any) -> Strategy | None:
        """The strategy written in ``data`` (validated by the schema), None when there is none.

        ``aggregationFunction`` is accepted and ignored, as the reference does (it validates the key
        but never aggregates).
        """
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return None
        period = data.get("reportPeriod", DEFAULT_REPORT_PERIOD_MS)
        ok = isinstance(period, int) and not isinstance(period, bool) and period > 0
        return cls(data["type"].upper(), period if ok else DEFAULT_REPORT_PERIOD_MS)


@dataclass(frozen=True, slots=True)
class MappingStrategies:
    """A mapping's strategies: its own (or inherited) default and those of its constant keys."""

    default: Strategy
    attributes: dict[str, Strategy]
    timeseries: dict[str, Strategy]

    @property
    def trivial(self) -> bool:
        """True when every value is sent as received (nothing to decide, no state)."""
        return self.default.type == "ON_RECEIVED" and not self.attributes and not self.timeseries

    def of(self, kind: str, key: str) -> Strategy:
        """The strategy of ``key`` in ``kind`` ("attributes" or "timeseries")."""
        return (self.attributes if kind == "attributes" else self.timeseries).get(key, self.default)

    def records(self, kind: str, key: str) -> bool:
        """Whether a value of ``key`` sent now is recorded: not with ON_RECEIVED, which keeps no state
        (a value it sends makes any earlier state of that key stale)."""
        return self.of(kind, key).type != "ON_RECEIVED"


def mapping_strategies(entry_strategy: Any, converter: dict[str, Any],
                       inherited: Strategy | None = None) -> MappingStrategies:
    """Read the strategies of one mapping (``entry_strategy``: its ``reportStrategy`` as written;
    ``inherited``: the connector's or the gateway's, used when the mapping has none)."""
    default = Strategy.from_dict(entry_strategy) or Strategy.from_dict(converter.get("reportStrategy")) \
        or inherited or Strategy()
    by_kind: dict[str, dict[str, Strategy]] = {"attributes": {}, "timeseries": {}}
    for kind, found in by_kind.items():
        points = converter.get(kind)
        for point in points if isinstance(points, list) else ():
            if isinstance(point, dict) and isinstance(point.get("key"), str):
                strategy = Strategy.from_dict(point.get("reportStrategy"))
                if strategy is not None:
                    found[point["key"]] = strategy
    return MappingStrategies(default, by_kind["attributes"], by_kind["timeseries"])


def inherited_strategy(connector: Any, gateway: Any) -> Strategy | None:
    """The strategy a mapping without its own inherits: the connector's, else the gateway's."""
    return Strategy.from_dict(connector) or Strategy.from_dict(gateway)


_SCALAR_TAGS = {str: "s", int: "i", float: "f", bool: "b", type(None): "n"}


def marker(value: Any) -> str:
    """What "the same value" means, as text that survives a restart: equal and of the same type
    (``1``, ``1.0`` and ``true`` differ; objects compare by content, whatever their key order)."""
    tag = _SCALAR_TAGS.get(type(value))
    if tag is not None:
        return tag + repr(value)
    return "j" + json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


class ReportFilter:
    """Applies one mapping's strategies to converted data; thread-safe, bounded by ``max_keys``.

    ``scope`` names its state in the storage (the marks it hands over with the data and reads back).
    """

    def __init__(self, strategies: MappingStrategies, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Callable[[], float] = time.time, scope: str = "") -> None:
        self.strategies = strategies
        self.max_keys = max_keys
        self.scope = scope
        self._clock = clock  # Unix time: the state outlives the process, so no monotonic clock
        self._lock = threading.Lock()
        self._devices = [threading.Lock() for _ in range(_STRIPES)]
        self._last: OrderedDict[StateKey, tuple[str, float]] = OrderedDict()
        self.counts = {"sent": 0, "left_out": 0, "forgotten": 0, "loaded": 0}

    def adopt(self, old: ReportFilter) -> None:
        """Over a reload, share ``old``'s state and device locks (requests still running on ``old`` keep
        both in step), forgetting the keys these strategies send as received."""
        with old._lock:
            self._lock, self._devices, self._last, self.counts = old._lock, old._devices, old._last, old.counts
            for state_key in [k for k in self._last if not self.strategies.records(k[1], k[2])]:
                del self._last[state_key]

    def load(self, marks: Iterable[ReportMark]) -> None:
        """Take the state stored by an earlier run (least recently reported first)."""
        with self._lock:
            for mark in marks:
                state_key = (mark.device, mark.kind, mark.key)
                self._last[state_key] = (mark.value, mark.sent_at)
                self._last.move_to_end(state_key)
                self.counts["loaded"] += 1
            self._trim()

    @contextmanager
    def holding(self, devices: Iterable[str]) -> Iterator[None]:
        """Hold the locks of ``devices`` (always in the same order): apply, store and commit in it."""
        stripes = sorted({hash(device) % _STRIPES for device in devices})
        for index in stripes:
            self._devices[index].acquire()
        try:
            yield
        finally:
            for index in reversed(stripes):
                self._devices[index].release()

    def apply(self, items: list[ConvertedData]) -> list[Update]:
        """Remove from ``items`` (in place) the values the strategies leave out; returns the state
        updates to :meth:`commit` once the remaining data is stored."""
        now = self._clock()
        updates: list[Update] = []
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
                updates: list[Update]) -> dict[str, Any]:
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
            mark = marker(value)
            last = self._last.get(state_key)
            if last is not None:
                self._last.move_to_end(state_key)  # recently received keys are kept longest
            elapsed = now - last[1] if last is not None else 0.0
            # a clock set back (elapsed < 0) makes the key due rather than silent until it catches up
            due = last is None or elapsed < 0 or elapsed * 1000 >= strategy.period_ms
            changed = last is None or last[0] != mark
            if kind_name == "ON_CHANGE":
                send = changed
            elif kind_name == "ON_REPORT_PERIOD":
                send = due
            else:  # ON_CHANGE_OR_REPORT_PERIOD
                send = changed or due
            if send:
                kept[key] = value
                updates.append((state_key, mark, now))
        return kept

    def marks(self, updates: Sequence[Update]) -> list[ReportMark]:
        """``updates`` as the marks stored with the data (in its transaction)."""
        return [ReportMark(self.scope, device, kind, key, mark, when, self.max_keys)
                for (device, kind, key), mark, when in updates]

    def commit(self, updates: Sequence[Update]) -> None:
        """Record the values of ``updates`` as sent (after they were stored)."""
        if not updates:
            return
        with self._lock:
            for state_key, mark, when in updates:
                self._last[state_key] = (mark, when)
                self._last.move_to_end(state_key)
            self.counts["sent"] += len(updates)
            self._trim()

    def _trim(self) -> None:
        """Forget the least recently used keys beyond ``max_keys``. Lock held."""
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
            self.counts["forgotten"] += 1

    def stats(self) -> dict[str, int]:
        """Keys tracked, the bound, and what was sent, left out, forgotten and loaded at start."""
        with self._lock:
            return {"tracked_keys": len(self._last), "max_keys": self.max_keys, **self.counts}
