"""How long the oldest unsent event has waited: coarse time marks over the queue's positions.

Each backend numbers its events in store order (an ordinal: the event id for memory storage, a
count of events stored since open for sqlite). :class:`AgeMarks` keeps ``(first ordinal, time)``
at most once per ``granularity`` seconds, so a put costs one clock read and a comparison; the age
of the queue's head is read from the last mark at or before it, never younger than the truth and
at most ``granularity`` older. Events already stored when the process started count as stored at
the start (their real age is not kept).
"""
from __future__ import annotations

from collections import deque

GRANULARITY_S = 1.0


class AgeMarks:
    """``(first ordinal, monotonic time)`` marks; the caller serialises access (its own lock)."""

    __slots__ = ("granularity", "_marks")

    def __init__(self, granularity: float = GRANULARITY_S) -> None:
        self.granularity = granularity
        self._marks: deque[tuple[int, float]] = deque()

    def stored(self, first: int, now: float) -> None:
        """Events from ordinal ``first`` on were stored at ``now``."""
        marks = self._marks
        if not marks or now - marks[-1][1] >= self.granularity:
            marks.append((first, now))

    def removed_through(self, head: int) -> None:
        """Every event before ordinal ``head`` is gone: forget the marks only they needed."""
        marks = self._marks
        while len(marks) > 1 and marks[1][0] <= head:
            marks.popleft()

    def oldest_age(self, head: int, now: float) -> float:
        """Seconds the event at ordinal ``head`` (the oldest still stored) has waited; 0 without marks."""
        self.removed_through(head)
        marks = self._marks
        return max(0.0, now - marks[0][1]) if marks and marks[0][0] <= head else 0.0
