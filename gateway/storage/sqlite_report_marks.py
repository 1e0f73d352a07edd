"""The ``report_marks`` table of the SQLite storage: reportStrategy state written in the events' transaction.

:class:`MarkTable` runs its statements on the connection and inside the transaction the storage gives it,
so a mark (the last value reported for a device and key, see :mod:`gateway.report_marks`) is committed
exactly when the event carrying that value is. Per scope at most ``max_keys`` marks are kept: a key
reported again moves to the newest place, and beyond the bound the least recently reported go first.
The marks of a commit are written per scope by two statements run over them (delete the keys'
rows, whose count says how many were replaced; insert them anew, with the highest ``seq``). The
number per scope is tracked in memory (read once at open) so the bound costs a statement only when
it is passed; like the receipts' counts, they change only once the transaction commits.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.report_marks import ReportMark

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS report_marks (seq INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, "
    "device TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, sent_at REAL NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS report_marks_by_key ON report_marks(scope, device, kind, key)",
)
_DELETE_KEY = "DELETE FROM report_marks WHERE scope = ? AND device = ? AND kind = ? AND key = ?"
_INSERT = "INSERT INTO report_marks(scope, device, kind, key, value, sent_at) VALUES (?, ?, ?, ?, ?, ?)"
_EVICT = ("DELETE FROM report_marks WHERE seq IN "
          "(SELECT seq FROM report_marks WHERE scope = ? ORDER BY seq LIMIT ?)")
_COUNTS = "SELECT scope, count(*) FROM report_marks GROUP BY scope"
_READ = "SELECT device, kind, key, value, sent_at FROM report_marks WHERE scope = ? ORDER BY seq"
_FORGET_KEY = "DELETE FROM report_marks WHERE scope = ? AND kind = ? AND key = ?"


def create(conn: sqlite3.Connection) -> None:
    """Create the table and its index if missing."""
    for statement in SCHEMA:
        conn.execute(statement)


def read(conn: sqlite3.Connection, scope: str) -> list[ReportMark]:
    """Every mark of ``scope``, the least recently reported first."""
    return [ReportMark(scope, device, kind, key, value, sent_at)
            for device, kind, key, value, sent_at in conn.execute(_READ, (scope,))]


def forget(conn: sqlite3.Connection, scope: str, keys: Sequence[tuple[str, str]]) -> int:
    """Delete the marks of ``keys`` (kind, key) of every device in ``scope`` in the caller's transaction;
    returns how many went."""
    return sum(conn.execute(_FORGET_KEY, (scope, kind, key)).rowcount for kind, key in keys)


class MarkTable:
    """Writes marks in the caller's transaction; its counts change only when that commit succeeds."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # marks per scope, as committed
        self.recount = False  # marks were deleted outside a write: count again before the next one

    def load(self, conn: sqlite3.Connection) -> None:
        """Count what is stored (at open, and after a failed transaction)."""
        self.counts = dict(conn.execute(_COUNTS).fetchall())

    def write(self, conn: sqlite3.Connection, marks: Sequence[ReportMark]) -> dict[str, int]:
        """Store ``marks`` (a key stored before is replaced and becomes the newest), evicting beyond each
        scope's ``max_keys``. Runs inside the caller's open transaction; returns the counts to
        :meth:`committed` after COMMIT."""
        if self.recount:
            self.recount = False
            self.load(conn)
        by_scope: dict[str, dict[tuple[str, str, str], ReportMark]] = {}
        for mark in marks:  # one row per key: the last mark of a key written twice in this commit
            by_scope.setdefault(mark.scope, {})[(mark.device, mark.kind, mark.key)] = mark
        counts = dict(self.counts)
        for scope, latest in by_scope.items():
            replaced = conn.executemany(_DELETE_KEY, [(scope, *key) for key in latest]).rowcount
            conn.executemany(_INSERT, [(scope, m.device, m.kind, m.key, m.value, m.sent_at) for m in latest.values()])
            count = counts.get(scope, 0) + len(latest) - max(replaced, 0)
            excess = count - max(next(iter(latest.values())).max_keys, 1)
            if excess > 0:
                conn.execute(_EVICT, (scope, excess))
                count -= excess
            counts[scope] = count
        return counts

    def committed(self, counts: dict[str, int]) -> None:
        """The transaction of :meth:`write` committed: its counts are the stored ones."""
        self.counts = counts
