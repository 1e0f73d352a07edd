"""SQLite event storage: a durable FIFO whose concurrent puts share one commit (leader/follower)."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import starmap

from gateway.receipts import Receipt
from gateway.report_marks import ReportMark
from gateway.stats import Histogram
from gateway.storage import sqlite_receipts, sqlite_report_marks
from gateway.storage.age import AgeMarks
from gateway.storage.base import EventStorage, StorageFailure, StorageFull, StoredEvent
from gateway.storage.memory import RECORD_OVERHEAD_BYTES, SizeLimits, as_payloads, payload_size
from gateway.storage.peeked import PeekedSizes
from gateway.storage.sqlite_batch import Batch
from gateway.storage.sqlite_file import DELETE_THROUGH, SYNCHRONOUS, claim, connect, rollback
from gateway.storage.sqlite_writer import SqliteWriter

log = logging.getLogger(__name__)

_MEASURE_RANGE = "SELECT count(*), total(length(payload)), max(id) FROM events WHERE id > ? AND id <= ?"
_PEEK = "SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?"


class SqliteStorage(EventStorage):
    """Durable FIFO in one SQLite file (WAL): ``put`` returns once committed.

    ``durability`` "power" (synchronous=FULL: each group commit is fsynced) or "process"
    (synchronous=NORMAL: a commit survives the process, not a power cut); see :data:`SYNCHRONOUS`.

    Group commit without a writer thread: the caller of ``put`` that finds no commit in progress
    becomes the leader and commits the open batch itself; callers arriving while a commit runs join
    the next batch and wait. When a commit ends, the first caller of the next batch (if any) is
    handed the lead and commits everything queued meanwhile in ONE transaction (one fsync). Reads
    (``peek``) use a second connection and never wait for a commit in progress.
    """

    waits_for_commit = True

    def __init__(self, path: str, limits: SizeLimits, durability: str = "power") -> None:
        if durability not in SYNCHRONOUS:
            raise ValueError(f"unknown durability {durability!r}; expected one of {', '.join(SYNCHRONOUS)}")
        self._path = path
        self.durability = durability
        self._synchronous = SYNCHRONOUS[durability]
        self._limits = limits
        self._lock = threading.Lock()  # guards the queue, the counters and the flags
        self._idle = threading.Condition(self._lock)  # close(): no commit is in progress
        self._data = threading.Condition(self._lock)  # consumers: events were committed
        self._trim_lock = threading.Lock()  # one remove_through at a time
        self._read_lock = threading.Lock()  # the reader connection is used by one thread at a time
        self._close_lock = threading.Lock()  # one close() at a time
        self._batch = Batch()  # the open batch: puts join it until a leader takes it
        self._pending = 0  # events admitted, not yet committed (they count against the limits)
        self._pending_size = 0
        self._last_id = 0  # the newest committed event's id: a peek after it needs no query
        self._peeked = PeekedSizes()  # what peeks handed out, so remove_through needs no query
        self._committing = False  # a leader is committing (or has been handed the next batch)
        self._trimmed_through = 0  # events with id <= this are removed (maybe not yet deleted)
        self._deleted_through = 0  # ... and those are deleted from the file (leader only)
        self._closing = False
        self._closed = False
        self._failing = False
        self._stats = {"put_count": 0, "rejected_full": 0, "failures": 0, "commits": 0}
        self.commit_latency = Histogram()  # seconds per group commit (one transaction, one fsync)
        self._ages = AgeMarks()  # ordinals: events counted in store order since open
        self._head_ordinal = 0  # ordinal of the oldest stored event
        self._next_ordinal = 0
        self._lock_file = claim(self._path)
        try:
            self._writer = SqliteWriter(self._path, self._synchronous)  # the commit's leader only
            try:
                self._reader = connect(self._path, "NORMAL")
            except StorageFailure:
                self._writer.close()
                raise
            self._count, self._size, self._last_id = self._writer.measure(0)
        except BaseException:
            self._lock_file.close()
            raise
        if self._count:  # events left by an earlier run count as stored now
            self._ages.stored(0, time.monotonic())
            self._next_ordinal = self._count

    # -- the EventStorage interface -------------------------------------------------------------

    def put(self, payloads: Sequence[bytes], receipt: Receipt | None = None,
            marks: Sequence[ReportMark] = ()) -> None:
        """Append all ``payloads`` or none; returns once they are committed to disk.

        ``receipt`` and ``marks`` are committed in the same transaction (see :mod:`gateway.storage.sqlite_receipts`
        and :mod:`gateway.storage.sqlite_report_marks`).

        Raises StorageFull when a limit would be passed and StorageFailure when the write fails or
        the storage is closed.
        """
        payloads = as_payloads(payloads)
        size = payload_size(payloads)
        with self._lock:
            if self._closing:
                raise StorageFailure(f"event storage {self._path} is closed")
            if not payloads:
                return
            count, stored_size = self._count + self._pending, self._size + self._pending_size
            if not self._limits.admits(count, stored_size, len(payloads), size):
                self._stats["rejected_full"] += 1
                raise StorageFull(self._full_reason(count, stored_size))
            self._pending += len(payloads)  # counted against the limits from now on
            self._pending_size += size
            batch = self._batch
            first = not batch.puts
            batch.rows.extend(payloads)
            batch.size += size
            batch.puts += 1
            if receipt is not None:
                batch.receipts.append(receipt)
            if marks:
                batch.marks.extend(marks)
            if not self._committing:  # then this batch was empty: its first put leads at once
                self._committing = True
                signal = None
            elif first:
                signal = batch.lead = threading.Event()
            else:
                signal = batch.done
                if signal is None:
                    signal = batch.done = threading.Event()
        if signal is None:
            self._lead()
        elif first:
            signal.wait()  # the current leader hands this batch over when its commit ends
            self._lead()
        else:
            signal.wait()
        if batch.failure is not None:
            raise StorageFailure(batch.failure)

    def find_receipt(self, scope: str, key: str, now: float) -> Receipt | None:
        """The committed, unexpired receipt of ``key`` in ``scope`` (survives a restart, like the events)."""
        with self._reading("read idempotency keys from") as reader:
            return sqlite_receipts.find(reader, scope, key, now)

    def report_marks(self, scope: str) -> list[ReportMark]:
        """The committed marks of ``scope``, least recently reported first (survive a restart, like the events)."""
        with self._reading("read reportStrategy state from") as reader:
            return sqlite_report_marks.read(reader, scope)

    def forget_report_marks(self, scope: str, keys: Sequence[tuple[str, str]]) -> None:
        """Delete those marks at once (not fsynced: a later commit that is makes it durable with it)."""
        if not keys:
            return
        with self._reading("delete reportStrategy state from") as reader:
            reader.execute("BEGIN IMMEDIATE")
            forgotten = sqlite_report_marks.forget(reader, scope, keys)
            reader.execute("COMMIT")
        if forgotten:
            self._writer.marks.recount = True

    def peek(self, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest committed events, in order, without removing them."""
        return self.peek_after(0, limit)

    def peek_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest committed events with id > ``event_id``, in order, without removing them."""
        with self._reading("read events from") as reader:
            after = max(self._trimmed_through, event_id)
            if after >= self._last_id:  # nothing newer is committed (the sender's idle check)
                return []
            rows = reader.execute(_PEEK, (after, max(limit, 0))).fetchall()
            self._peeked.read(after, rows)
        return list(starmap(StoredEvent, rows))

    def remove_through(self, event_id: int) -> None:
        """Remove every event with id <= ``event_id``; never waits for a commit in progress.

        The events leave the queue (``peek``, ``count``, the limits) at once. Their rows are
        deleted in the next commit's transaction, or right here when no commit is running (not
        fsynced; see docs/storage.md).
        """
        with self._trim_lock:
            with self._reading("remove events from") as reader:
                start = self._trimmed_through
                known = self._peeked.remove_through(start, event_id)  # the sender removes what it read
                if known is not None:
                    removed, size, last = known
                else:
                    removed, size, last = reader.execute(_MEASURE_RANGE, (start, event_id)).fetchone()
            if not removed:
                return
            with self._lock:
                self._count -= removed
                self._size -= int(size) + RECORD_OVERHEAD_BYTES * removed
                self._head_ordinal += removed
                self._ages.removed_through(self._head_ordinal)
                self._trimmed_through = last  # never past the newest event: later ids stay
                lead = not self._committing and not self._closing
                if lead:  # the open batch is empty (a put in it would lead): delete the rows at once
                    self._committing = True
                    # taken in this hold: a put arriving from now on waits for this leader's hand-over
                    batch, self._batch = self._batch, Batch()
        if lead:
            self._lead(batch)

    def count(self) -> int:
        """Number of committed events."""
        with self._lock:
            self._check_open()
            return self._count

    def wait_for_data(self, timeout: float) -> bool:
        """Block until a commit brings events (or ``close``), at most ``timeout`` seconds."""
        with self._lock:
            self._check_open()
            if not self._count:
                self._data.wait_for(lambda: self._count or self._closing, timeout)
            return self._count > 0 and not self._closing

    def stats(self) -> dict[str, int | float]:
        """Counters for metrics: stored events and bytes, accepted puts, refusals, failures, commits.

        Also ``failing`` (1 while the last commit failed) and ``oldest_age_s`` (seconds the oldest
        stored event has waited, see :mod:`gateway.storage.age`).
        """
        with self._lock:
            age = self._ages.oldest_age(self._head_ordinal, time.monotonic()) if self._count else 0.0
            return {"stored": self._count, "bytes": self._size, **self._stats, "failing": int(self._failing),
                    "oldest_age_s": age}

    def close(self) -> None:
        """Commit every put already accepted, then close the file. Idempotent."""
        with self._close_lock:
            with self._lock:
                if self._closed:
                    return
                self._closing = True  # no put joins a batch from now on
                self._data.notify_all()
                self._idle.wait_for(lambda: not self._committing)  # accepted puts are committed
                self._committing = True  # and nobody commits again
            self._delete_trimmed()
            with self._read_lock:
                self._closed = True
                for close in (self._writer.close, self._reader.close):
                    try:
                        close()
                    except sqlite3.Error as exc:  # nothing is pending; report and go on
                        log.warning("closing event storage %s: %s", self._path, exc)
                self._lock_file.close()

    # -- group commit -------------------------------------------------------------------------

    def _lead(self, batch: Batch | None = None) -> None:
        """Commit ``batch`` (default: take the open one), then hand the lead to the next batch or go idle.

        The caller holds the lead (``_committing``). A put leading takes its own batch here, with
        everyone who joined it meanwhile; remove_through takes its (empty) batch in the same lock
        hold as the lead, so a put that arrives after it waits for this leader's hand-over.
        """
        if batch is None:
            with self._lock:
                batch, self._batch = self._batch, Batch()
        try:
            self._write(batch)
        except Exception as exc:  # fail this batch, never the next one
            log.exception("event storage writer for %s failed", self._path)
            batch.failure = f"cannot store events in {self._path}: {exc}"
        finally:
            with self._lock:
                following = self._batch.lead
                if following is None:  # nothing queued meanwhile (a queued batch's first put made it)
                    self._committing = False
                    if self._closing:
                        self._idle.notify_all()
            if following is not None:
                following.set()
            if batch.done is not None:
                batch.done.set()

    def _write(self, batch: Batch) -> None:
        """Commit ``batch`` in one transaction (or only delete trimmed rows when it holds no put)."""
        rows = batch.rows
        if not rows:
            self._delete_trimmed()
            return
        started = time.monotonic()
        failure: str | None = "the commit did not end"  # stays so only if _commit raised (logged by _lead)
        try:
            failure = self._commit(rows, batch.receipts, batch.marks)
        finally:
            self._committed(batch, failure, started)

    def _committed(self, batch: Batch, failure: str | None, started: float) -> None:
        """Account for ``batch`` after its transaction: stored, or failed (its puts raise)."""
        done = time.monotonic()
        added = len(batch.rows)
        with self._lock:
            self._pending -= added
            self._pending_size -= batch.size
            stats = self._stats
            self.commit_latency.observe(done - started)
            if failure is None:
                if not self._count:
                    self._data.notify_all()  # wait_for_data waits only while the queue is empty
                self._ages.stored(self._next_ordinal, done)
                self._next_ordinal += added
                self._count += added
                self._size += batch.size
                stats["put_count"] += batch.puts
                stats["commits"] += 1
            else:
                batch.failure = failure
                stats["failures"] += batch.puts
        self._note_health(failure)

    def _full_reason(self, count: int, size: int) -> str:
        limits = self._limits
        return (f"event storage {self._path} is full ({count} events, ~{size} bytes; "
                f"limits {limits.max_records} events, {limits.max_bytes} bytes)")

    def _commit(self, rows: list[bytes], receipts: Sequence[Receipt] = (),
                marks: Sequence[ReportMark] = ()) -> str | None:
        """Insert ``rows``, ``receipts`` and ``marks`` (and delete what was removed meanwhile) in one transaction.

        Returns None on success, else why it failed.
        """
        writer = self._writer
        try:
            if writer.broken:
                self._reopen_writer()
            trim = self._trimmed_through
            delete = trim if trim > self._deleted_through else None
            self._last_id = writer.commit(rows, receipts, marks, delete, self._last_id)
            self._deleted_through = trim
            return None  # committed: peeks may now read up to the new last id
        except (sqlite3.Error, StorageFailure) as exc:
            writer.failed()
            return f"cannot store events in {self._path}: {exc}"

    def _delete_trimmed(self) -> None:
        """Delete the removed rows on the reader connection (no fsync); the leader only."""
        trim = self._trimmed_through
        if trim <= self._deleted_through:
            return
        try:
            with self._reading("delete delivered events from") as reader:
                reader.execute("BEGIN IMMEDIATE")
                reader.execute(DELETE_THROUGH, (trim,))
                reader.execute("COMMIT")
        except StorageFailure as exc:  # the rows stay, out of the queue; the next commit retries
            log.warning("%s", exc)
            return
        self._deleted_through = trim

    def _reopen_writer(self) -> None:
        """Replace a writer connection that failed mid-transaction and recount what is really stored."""
        self._writer.reopen()
        count, size, self._last_id = self._writer.measure(self._trimmed_through)
        with self._lock:
            self._count, self._size = count, size
            self._next_ordinal = self._head_ordinal + count

    def _note_health(self, failure: str | None) -> None:
        """Log a change between healthy and failing once, not once per batch."""
        if failure is not None and not self._failing:
            log.error("%s; puts are refused until the cause is fixed", failure)
        elif failure is None and self._failing:
            log.warning("event storage %s is writable again", self._path)
        self._failing = failure is not None

    # -- helpers --------------------------------------------------------------------------------

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """The reader connection, under its lock, on an open storage; an SQLite error there rolls back
        and becomes ``StorageFailure("cannot <what> <path>: ...")``."""
        with self._read_lock:
            self._check_open()
            try:
                yield self._reader
            except sqlite3.Error as exc:
                rollback(self._reader)
                raise StorageFailure(f"cannot {what} {self._path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageFailure(f"event storage {self._path} is closed")
