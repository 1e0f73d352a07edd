"""The ``receipts`` table of the SQLite storage: Idempotency-Key answers written in the events' transaction.

:class:`ReceiptTable` runs its statements on the connection and inside the transaction the storage
gives it, so a receipt is committed exactly when the request's events are (one fsync for both).
Per scope at most ``max_keys`` receipts are kept, the oldest (lowest ``seq``) deleted first; the
number per scope is tracked in memory (read once at open) so the bound costs one statement only
when it is passed. Expired receipts are ignored at once and deleted at most every
:data:`PURGE_INTERVAL_S` seconds, in a transaction that commits anyway.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.receipts import Receipt

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS receipts (seq INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, "
    "key TEXT NOT NULL, fingerprint BLOB NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, "
    "content_type TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS receipts_by_key ON receipts(scope, key)",
    "CREATE INDEX IF NOT EXISTS receipts_by_expiry ON receipts(expires)",
)
PURGE_INTERVAL_S = 60.0
_FIND = ("SELECT fingerprint, status, body, content_type, expires FROM receipts "
         "WHERE scope = ? AND key = ? AND expires > ?")
_DELETE_KEY = "DELETE FROM receipts WHERE scope = ? AND key = ?"
_INSERT = ("INSERT INTO receipts(scope, key, fingerprint, status, body, content_type, expires) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_EVICT = ("DELETE FROM receipts WHERE seq IN "
          "(SELECT seq FROM receipts WHERE scope = ? ORDER BY seq LIMIT ?)")
_COUNTS = "SELECT scope, count(*) FROM receipts GROUP BY scope"
_PURGE = "DELETE FROM receipts WHERE expires <= ?"


def create(conn: sqlite3.Connection) -> None:
    """Create the table and its indexes if missing."""
    for statement in SCHEMA:
        conn.execute(statement)


def find(conn: sqlite3.Connection, scope: str, key: str, now: float) -> Receipt | None:
    """The receipt of ``key`` in ``scope`` unless it expired by ``now``."""
    row = conn.execute(_FIND, (scope, key, now)).fetchone()
    if row is None:
        return None
    fingerprint, status, body, content_type, expires = row
    return Receipt(scope, key, bytes(fingerprint), status, bytes(body), content_type, expires)


class ReceiptTable:
    """Writes receipts in the caller's transaction; its counts change only when that commit succeeds."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # receipts per scope, as committed
        self._purged_at = float("-inf")

    def load(self, conn: sqlite3.Connection) -> None:
        """Count what is stored (at open, and after a failed transaction)."""
        self.counts = dict(conn.execute(_COUNTS).fetchall())

    def write(self, conn: sqlite3.Connection, receipts: Sequence[Receipt], now: float) -> dict[str, int]:
        """Insert ``receipts`` (a key stored before is replaced) and evict beyond each scope's ``max_keys``.

        Runs inside the caller's open transaction; returns the counts to :meth:`committed` after COMMIT.
        """
        counts = dict(self.counts)
        if now - self._purged_at >= PURGE_INTERVAL_S:
            if conn.execute(_PURGE, (now,)).rowcount:
                counts = dict(conn.execute(_COUNTS).fetchall())
        for receipt in receipts:
            replaced = conn.execute(_DELETE_KEY, (receipt.scope, receipt.key)).rowcount
            conn.execute(_INSERT, (receipt.scope, receipt.key, receipt.fingerprint, receipt.status, receipt.body,
                                   receipt.content_type, receipt.expires))
            count = counts.get(receipt.scope, 0) + (0 if replaced else 1)
            excess = count - max(receipt.max_keys, 1)
            if excess > 0:
                conn.execute(_EVICT, (receipt.scope, excess))
                count -= excess
            counts[receipt.scope] = count
        return counts

    def committed(self, counts: dict[str, int], now: float, purged: bool) -> None:
        """The transaction of :meth:`write` committed: its counts are the stored ones."""
        self.counts = counts
        if purged:
            self._purged_at = now

    def purge_due(self, now: float) -> bool:
        """Whether :meth:`write` at ``now`` deletes expired receipts."""
        return now - self._purged_at >= PURGE_INTERVAL_S
