"""In-memory event storage: a bounded FIFO that refuses (never drops) when full; lost on restart."""
from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.receipts import Receipt
from gateway.report_marks import ReportMark
from gateway.storage.age import AgeMarks
from gateway.storage.base import EventStorage, StorageFailure, StorageFull, StoredEvent

# Estimated bookkeeping cost of one stored event on top of its payload bytes. Both backends count
# ``len(payload) + RECORD_OVERHEAD_BYTES`` against ``max_size_mb`` so the limit means the same thing.
RECORD_OVERHEAD_BYTES = 64
#: pacing (memory only): while the sender is draining and more than this many (estimated) bytes wait,
#: a put first waits up to PACE_WAIT_S until the sender reads or removes events again, so ingestion
#: follows delivery instead of growing RAM
PACE_BYTES = 2 * 1024 * 1024
PACE_WAIT_S = 0.02
#: "draining" = the sender read or removed events within this many seconds (not while ThingsBoard is away)
DRAINING_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """The two limits every backend enforces: number of events and (estimated) bytes."""

    max_records: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_records <= 0 or self.max_bytes <= 0:
            raise ValueError(f"storage limits must be positive, got {self.max_records} records, "
                             f"{self.max_bytes} bytes")

    @classmethod
    def from_config(cls, max_records: int, max_size_mb: int) -> SizeLimits:
        """Limits from the config's ``max_records`` and ``max_size_mb`` (MiB)."""
        return cls(max_records, max_size_mb * 1024 * 1024)

    def admits(self, records: int, size: int, more_records: int, more_size: int) -> bool:
        """Whether ``more_*`` can be added to what is already stored without passing a limit."""
        return records + more_records <= self.max_records and size + more_size <= self.max_bytes


def as_payloads(payloads: Sequence[bytes]) -> Sequence[bytes]:
    """``payloads`` as a list or tuple (a generator would be consumed by the size check)."""
    return payloads if isinstance(payloads, list | tuple) else list(payloads)


def payload_size(payloads: Sequence[bytes]) -> int:
    """The size ``payloads`` count against ``max_size_mb``; raises TypeError for non-bytes."""
    kinds = set(map(type, payloads))
    if kinds - {bytes}:
        for payload in payloads:
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"event payloads must be bytes, got {type(payload).__name__}")
    return sum(map(len, payloads)) + RECORD_OVERHEAD_BYTES * len(payloads)


class MemoryStorage(EventStorage):
    """A bounded, thread-safe FIFO in RAM. ``put`` is immediate; nothing survives a restart.

    Only the payloads are kept: ids are consecutive, so the head's id is ``_next_id - len(queue)``
    (about 80 bytes less per waiting event than keeping a StoredEvent and its id each).
    """

    def __init__(self, limits: SizeLimits) -> None:
        self._limits = limits
        self._events: deque[bytes] = deque()
        self._size = 0
        self._next_id = 1  # the id the next stored payload gets; never reused
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)  # the consumer read or removed events
        self._last_progress = float("-inf")
        self._closed = False
        self._put_count = 0
        self._rejected_full = 0
        self._paced = 0
        self._ages = AgeMarks()  # ordinals: the event ids
        self._receipts: dict[str, OrderedDict[str, Receipt]] = {}  # scope -> key -> receipt, oldest first

    def put(self, payloads: Sequence[bytes], receipt: Receipt | None = None,
            marks: Sequence[ReportMark] = ()) -> None:
        """Append all ``payloads`` or none (with ``receipt``); raises StorageFull when a limit would be passed.

        ``marks`` are not kept: nothing here survives a restart, so the connector's memory is the state.
        """
        payloads = as_payloads(payloads)
        size = payload_size(payloads)
        if not payloads:
            self._check_open()
            return
        with self._lock:
            self._check_open()
            if self._size > PACE_BYTES and time.monotonic() - self._last_progress < DRAINING_WINDOW_S:
                self._paced += 1
                self._progress.wait(PACE_WAIT_S)  # frees the GIL for the sender until it takes a batch
                self._check_open()
            if not self._limits.admits(len(self._events), self._size, len(payloads), size):
                self._rejected_full += 1
                raise StorageFull(f"memory storage is full ({len(self._events)} events, "
                                  f"~{self._size} bytes stored)")
            if not self._events:
                self._data.notify_all()  # wait_for_data waits only while the queue is empty
            self._events.extend(p if type(p) is bytes else bytes(p) for p in payloads)
            self._ages.stored(self._next_id, time.monotonic())
            self._next_id += len(payloads)
            self._size += size
            self._put_count += 1
            if receipt is not None:
                self._keep(receipt)

    def _keep(self, receipt: Receipt) -> None:
        """Remember ``receipt`` as the newest of its scope, evicting the oldest beyond ``max_keys``. Lock held."""
        scope = self._receipts.setdefault(receipt.scope, OrderedDict())
        scope.pop(receipt.key, None)
        scope[receipt.key] = receipt
        while len(scope) > max(receipt.max_keys, 1):
            scope.popitem(last=False)

    def find_receipt(self, scope: str, key: str, now: float) -> Receipt | None:
        """The unexpired receipt of ``key`` in ``scope``; lost on restart like the events."""
        with self._lock:
            self._check_open()
            found = self._receipts.get(scope, {}).get(key)
        return found if found is not None and found.expires > now else None

    def peek(self, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest events, in order, without removing them."""
        with self._lock:
            self._check_open()
            first = self._next_id - len(self._events)
            return [StoredEvent(first + index, payload)
                    for index, payload in enumerate(itertools.islice(self._events, max(limit, 0)))]

    def peek_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest events with id > ``event_id``, in order, without removing them."""
        with self._lock:
            self._check_open()
            first = self._next_id - len(self._events)
            skip = min(max(event_id - first + 1, 0), len(self._events))
            start = first + skip
            events = [StoredEvent(start + index, payload) for index, payload in
                      enumerate(itertools.islice(self._events, skip, skip + max(limit, 0)))]
            if events:
                self._note_progress()
            return events

    def remove_through(self, event_id: int) -> None:
        """Drop every event with id <= ``event_id``."""
        with self._lock:
            self._check_open()
            events = self._events
            count = min(event_id - (self._next_id - len(events)) + 1, len(events))
            removed = 0
            for _ in range(count):
                removed += len(events.popleft()) + RECORD_OVERHEAD_BYTES
            self._size -= removed
            if count > 0:
                self._ages.removed_through(self._next_id - len(events))
                self._note_progress()

    def count(self) -> int:
        """Number of events stored."""
        with self._lock:
            self._check_open()
            return len(self._events)

    def wait_for_data(self, timeout: float) -> bool:
        """Block until an event is stored (woken by ``put``), at most ``timeout`` seconds."""
        with self._lock:
            self._check_open()
            if not self._events:
                self._data.wait_for(lambda: self._events or self._closed, timeout)
            return bool(self._events) and not self._closed

    def stats(self) -> dict[str, int]:
        """Counters for metrics: stored events and bytes, accepted puts, refusals, failures, paced puts."""
        with self._lock:
            head = self._next_id - len(self._events)
            age = self._ages.oldest_age(head, time.monotonic()) if self._events else 0.0
            return {"stored": len(self._events), "bytes": self._size, "put_count": self._put_count,
                    "rejected_full": self._rejected_full, "failures": 0, "paced": self._paced,
                    "failing": 0, "oldest_age_s": age}

    def close(self) -> None:
        """Release the events; later calls raise StorageFailure. Idempotent."""
        with self._lock:
            self._closed = True
            self._events.clear()
            self._receipts.clear()
            self._size = 0
            self._data.notify_all()
            self._progress.notify_all()

    def _note_progress(self) -> None:
        """The consumer is draining: release paced puts. Call with the lock held."""
        self._last_progress = time.monotonic()
        self._progress.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageFailure("memory storage is closed")
