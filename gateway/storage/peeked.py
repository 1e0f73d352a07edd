"""The ids and sizes of the events a storage handed out by ``peek_after``, so that removing them later
needs no query to learn how many they were and what they weighed.

The sender reads the queue in order (``peek_after(last_sent)``) and removes what ThingsBoard
acknowledged (``remove_through(id)``). Every row a peek returned is every stored row in
``(after, last id returned]``: so while each peek starts where the previous one ended, the entries
kept here are exactly the stored rows from :attr:`PeekedSizes.start` on, and a removal that stays
inside them can be counted from here. Anything else (a resend that reads from further back, a
removal past what was read) starts over or answers None, and the storage asks SQLite instead.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable

#: at most this many entries are kept (~100 bytes each); past it the memo starts over
MAX_ENTRIES = 65_536


class PeekedSizes:
    """(id, size) of the rows read and not yet removed, when they are contiguous in the table."""

    __slots__ = ("start", "entries")

    def __init__(self) -> None:
        self.start = 0  # the entries are every stored row with id > start, up to the last entry
        self.entries: deque[tuple[int, int]] = deque()

    def read(self, after: int, rows: Iterable[tuple[int, bytes]]) -> None:
        """Note ``rows``: all the stored rows with id > ``after`` up to the last of them, in order."""
        entries = self.entries
        last = entries[-1][0] if entries else self.start
        if after != last or len(entries) >= MAX_ENTRIES:  # not where the last read ended: start over
            entries.clear()
            self.start = after
        for event_id, payload in rows:
            entries.append((event_id, len(payload)))

    def remove_through(self, trimmed: int, event_id: int) -> tuple[int, int, int] | None:
        """(count, payload bytes, last id) of the rows in (``trimmed``, ``event_id``], if known here.

        The entries up to the last id returned are dropped. None when the range is not covered:
        rows before :attr:`start` or after the last entry were never read here.
        """
        entries = self.entries
        if not entries or self.start > trimmed or event_id > entries[-1][0]:
            return None
        while entries and entries[0][0] <= trimmed:  # removed already
            entries.popleft()
        count = size = 0
        last = trimmed
        while entries and entries[0][0] <= event_id:
            last, weight = entries.popleft()
            count += 1
            size += weight
        self.start = last
        return count, size, last
