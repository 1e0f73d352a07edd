"""Memory storage: ids from a payload-only queue, and puts paced by delivery while a large backlog drains."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.storage import memory
from gateway.storage.base import StorageFailure, StorageFull, StoredEvent
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.storage.sqlite import SqliteStorage

LONG_WAIT = 30.0  # a paced put would wait this long without a removal


@pytest.fixture
def store(monkeypatch: Any) -> Iterator[MemoryStorage]:
    monkeypatch.setattr(memory, "PACE_BYTES", 1000)
    monkeypatch.setattr(memory, "PACE_WAIT_S", LONG_WAIT)
    storage = MemoryStorage(SizeLimits(100, 1 << 20))
    yield storage
    storage.close()


def put_in_thread(storage: MemoryStorage, payload: bytes) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            storage.put([payload])
            outcome.append("stored")
        except (StorageFull, StorageFailure) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_ids_are_consecutive_and_never_reused() -> None:
    storage = MemoryStorage(SizeLimits(100, 1 << 20))
    storage.put([b"a", b"b", b"c"])
    storage.remove_through(0)  # before the head: nothing
    assert storage.peek(10) == [StoredEvent(1, b"a"), StoredEvent(2, b"b"), StoredEvent(3, b"c")]
    storage.remove_through(2)
    assert storage.peek(10) == [StoredEvent(3, b"c")]
    storage.remove_through(99)  # past the tail: everything, and later ids stay new
    storage.put([bytearray(b"d")])
    assert storage.peek(10) == [StoredEvent(4, b"d")] and type(storage.peek(1)[0].payload) is bytes
    assert storage.stats()["bytes"] == 1 + memory.RECORD_OVERHEAD_BYTES
    storage.close()


def test_while_draining_a_put_over_the_pace_mark_waits_for_the_next_removal(store: MemoryStorage) -> None:
    store.put([b"x" * 600, b"y" * 600])  # over the (patched) 1000-byte mark
    store.remove_through(0)  # nothing removed: the sender is not known to drain yet
    thread, outcome = put_in_thread(store, b"z")
    thread.join(LONG_WAIT / 3)
    assert outcome == ["stored"]  # no pacing while nothing is being delivered (ThingsBoard away)
    store.put([b"w" * 600])
    store.remove_through(1)  # the sender delivers: from now on, puts over the mark are paced
    thread, outcome = put_in_thread(store, b"v")
    thread.join(0.3)
    assert thread.is_alive() and outcome == []
    store.remove_through(2)
    thread.join(LONG_WAIT / 3)
    assert outcome == ["stored"] and store.stats()["paced"] == 1
    assert [e.payload for e in store.peek(10)] == [b"z", b"w" * 600, b"v"]


def test_the_sender_taking_a_batch_releases_paced_puts(store: MemoryStorage) -> None:
    store.put([b"a", b"x" * 1200])
    store.remove_through(1)
    thread, outcome = put_in_thread(store, b"b")
    thread.join(0.3)
    assert thread.is_alive()
    assert [e.id for e in store.peek_after(1, 10)] == [2]  # the sender reads its next batch
    thread.join(LONG_WAIT / 3)
    assert outcome == ["stored"]


def test_close_releases_a_paced_put(store: MemoryStorage) -> None:
    store.put([b"a", b"x" * 1200])
    store.remove_through(1)
    thread, outcome = put_in_thread(store, b"z")
    thread.join(0.3)
    assert thread.is_alive()
    store.close()
    thread.join(LONG_WAIT / 3)
    assert len(outcome) == 1 and isinstance(outcome[0], StorageFailure)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_peek_after_reads_past_events_still_in_flight(backend: str, tmp_path: Any) -> None:
    limits = SizeLimits(100, 1 << 20)
    storage = MemoryStorage(limits) if backend == "memory" else SqliteStorage(str(tmp_path / "e.db"), limits)
    try:
        storage.put([b"%d" % n for n in range(1, 8)])
        assert [e.id for e in storage.peek_after(0, 3)] == [1, 2, 3]
        assert [e.id for e in storage.peek_after(3, 3)] == [4, 5, 6]  # 1-3 sent, not yet removed
        storage.remove_through(5)
        assert [(e.id, e.payload) for e in storage.peek_after(3, 10)] == [(6, b"6"), (7, b"7")]
        assert storage.peek_after(7, 10) == [] and storage.peek_after(99, 10) == []
        assert [e.id for e in storage.peek(10)] == [6, 7]
    finally:
        storage.close()
