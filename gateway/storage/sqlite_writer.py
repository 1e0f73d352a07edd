"""The SQLite storage's writer connection: one transaction per group commit (the events, their
receipts and reportStrategy marks, and the delete of rows already removed), and its recovery when
a transaction fails. Only the commit's leader uses it (see :class:`gateway.storage.sqlite.SqliteStorage`)."""
from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence

from gateway.receipts import Receipt
from gateway.report_marks import ReportMark
from gateway.storage import sqlite_receipts, sqlite_report_marks
from gateway.storage.base import StorageFailure
from gateway.storage.memory import RECORD_OVERHEAD_BYTES
from gateway.storage.sqlite_file import DELETE_THROUGH, connect, rollback

#: rows per INSERT statement: one multi-row VALUES statement is one sqlite3_step, and Python's
#: sqlite3 releases and re-takes the GIL around every step; with busy threads on another core each
#: re-take can wait a whole GIL switch interval (5 ms), so a row-per-step executemany stretched
#: group commits under load (unpinned, 64 connections: 28 % of the ceiling; see docs/performance.md)
_ROWS_PER_INSERT = 64
_MEASURE = "SELECT count(*), total(length(payload)), max(id) FROM events WHERE id > ?"


class SqliteWriter:
    """The connection group commits write through, with the receipt and mark tables' bookkeeping."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self._synchronous = synchronous
        self.conn = connect(path, synchronous)
        self.broken = False  # a transaction failed: reopen before the next one
        self.receipts = sqlite_receipts.ReceiptTable()
        self.marks = sqlite_report_marks.MarkTable()
        try:
            self._load_tables()
        except StorageFailure:
            self.conn.close()
            raise

    def measure(self, after: int) -> tuple[int, int, int]:
        """Events with id > ``after``, the size they count against the limits, and the newest id (or ``after``)."""
        try:
            count, size, newest = self.conn.execute(_MEASURE, (after,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageFailure(f"cannot read event storage {self.path}: {exc}") from exc
        return count, int(size) + RECORD_OVERHEAD_BYTES * count, newest or after

    def commit(self, rows: list[bytes], receipts: Sequence[Receipt], marks: Sequence[ReportMark],
               delete_through: int | None, newest: int) -> int:
        """Insert ``rows`` with ``receipts`` and ``marks`` (after deleting rows with id <= ``delete_through``,
        if given) in one transaction; returns the id of the last row (``newest`` when there is none).

        Raises sqlite3.Error or StorageFailure with the transaction left open: the caller calls
        :meth:`failed`.
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        if delete_through is not None:
            conn.execute(DELETE_THROUGH, (delete_through,))
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start:start + _ROWS_PER_INSERT]
            newest = conn.execute(_insert_statement(len(chunk)), chunk).lastrowid
        if receipts:
            now = time.time()
            purge = self.receipts.purge_due(now)
            counts = self.receipts.write(conn, receipts, now)
        mark_counts = self.marks.write(conn, marks) if marks else None
        conn.execute("COMMIT")
        if receipts:
            self.receipts.committed(counts, now, purge)
        if mark_counts is not None:
            self.marks.committed(mark_counts)
        return newest

    def failed(self) -> None:
        """After a failed :meth:`commit`: roll back, and reopen before the next one."""
        self.broken = True
        rollback(self.conn)

    def reopen(self) -> None:
        """Replace a connection that failed mid-transaction; the tables are counted again."""
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        self.conn = connect(self.path, self._synchronous)
        self._load_tables()
        self.broken = False

    def close(self) -> None:
        self.conn.close()

    def _load_tables(self) -> None:
        """Count the stored receipts and reportStrategy marks (their bounds are kept per scope)."""
        try:
            self.receipts.load(self.conn)
            self.marks.load(self.conn)
        except sqlite3.Error as exc:
            raise StorageFailure(f"cannot read idempotency keys or reportStrategy state from {self.path}: "
                                 f"{exc}") from exc


@functools.cache
def _insert_statement(rows: int) -> str:
    """``INSERT`` of ``rows`` payloads in one statement; ids follow the order of the values."""
    return "INSERT INTO events(payload) VALUES " + ",".join(["(?)"] * rows)
