"""The event-storage interface shared by every backend (memory, sqlite)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.receipts import Receipt
from gateway.report_marks import ReportMark


class StorageFull(Exception):
    """The configured size limit is reached; the caller answers 503 with Retry-After."""


class StorageFailure(Exception):
    """The backend cannot write (disk full, unwritable file, corrupt database)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event: its position in the queue and its payload (compact JSON bytes)."""

    id: int
    payload: bytes


class EventStorage(ABC):
    """A FIFO of opaque payloads that survives what the backend promises to survive.

    ``put`` returns only once the events are durable (for sqlite: committed), so a caller may
    acknowledge them. One consumer reads from the head with ``peek`` and removes what it has
    delivered with ``remove_through``; events are never removed before that (at-least-once).
    All methods are thread-safe.
    """

    #: ``put`` waits for a disk commit, holding its caller's thread meanwhile (a server needs threads
    #: for the waiting requests); False when it returns at once
    waits_for_commit: bool = False

    @abstractmethod
    def put(self, payloads: Sequence[bytes], receipt: Receipt | None = None,
            marks: Sequence[ReportMark] = ()) -> None:
        """Append ``payloads`` atomically (all or none). Raises StorageFull or StorageFailure.

        With ``receipt``, it is kept with the payloads, in the same transaction: both or neither.
        ``marks`` (reportStrategy state, see :mod:`gateway.report_marks`) likewise, where the backend
        keeps them.
        """

    def find_receipt(self, scope: str, key: str, now: float) -> Receipt | None:
        """The unexpired receipt stored for ``key`` in ``scope`` (see :mod:`gateway.receipts`), if any.

        A backend that keeps no receipts finds none.
        """
        return None

    def report_marks(self, scope: str) -> list[ReportMark]:
        """The marks stored in ``scope``, least recently reported first; a backend that keeps none has none."""
        return []

    def forget_report_marks(self, scope: str, keys: Sequence[tuple[str, str]]) -> None:
        """Delete the marks of ``keys`` ((kind, key) pairs, every device) in ``scope``; none kept, none to delete."""
        return None

    @abstractmethod
    def peek(self, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest events, in order, without removing them."""

    def peek_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` oldest events with id > ``event_id``, in order, without removing them.

        Lets the consumer read past events it has sent but not yet removed. This default only looks
        at the first ``limit`` events; the real backends override it to read past any number.
        """
        return [event for event in self.peek(limit) if event.id > event_id]

    @abstractmethod
    def remove_through(self, event_id: int) -> None:
        """Remove every event with id <= ``event_id`` (they were delivered)."""

    @abstractmethod
    def count(self) -> int:
        """Number of events stored."""

    def wait_for_data(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until an event may be available; True if one is."""
        return self.count() > 0

    @abstractmethod
    def close(self) -> None:
        """Flush and release the backend; later calls raise StorageFailure."""
