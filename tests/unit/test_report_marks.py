"""reportStrategy marks in both storage backends: sqlite keeps them with the events, in the same
transaction (a refused or failed put keeps none), bounded per scope and across a reopen; memory keeps none."""
from __future__ import annotations

import sqlite3

import pytest

from gateway.report_marks import ReportMark
from gateway.storage.base import StorageFailure, StorageFull
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.storage.sqlite import SqliteStorage


def mark(key: str, value: str = "int:1", scope: str = "rest/r", device: str = "D", max_keys: int = 100,
         sent_at: float = 1000.0) -> ReportMark:
    return ReportMark(scope, device, "timeseries", key, value, sent_at, max_keys)


def stored(storage: SqliteStorage, scope: str = "rest/r") -> list[tuple[str, str, float]]:
    return [(m.key, m.value, m.sent_at) for m in storage.report_marks(scope)]


@pytest.fixture
def sqlite_storage(tmp_path):
    storage = SqliteStorage(str(tmp_path / "events.db"), SizeLimits(2, 1 << 30))
    yield storage
    storage.close()


def test_memory_storage_keeps_no_marks() -> None:
    storage = MemoryStorage(SizeLimits(10, 1 << 30))
    try:
        storage.put([b"a"], None, [mark("t")])
        assert storage.count() == 1 and storage.report_marks("rest/r") == []
    finally:
        storage.close()


def test_marks_are_stored_with_the_events_and_a_key_reported_again_is_replaced(sqlite_storage) -> None:
    sqlite_storage.put([b"a"], None, [mark("t"), mark("h"), mark("t", scope="rest/other")])
    sqlite_storage.put([b"b"], None, [mark("t", "int:2", sent_at=2000.0)])
    assert stored(sqlite_storage) == [("h", "int:1", 1000.0), ("t", "int:2", 2000.0)]  # least recent first
    assert stored(sqlite_storage, "rest/other") == [("t", "int:1", 1000.0)]


def test_a_refused_put_keeps_no_marks(sqlite_storage) -> None:
    sqlite_storage.put([b"a", b"b"], None, [mark("t")])
    with pytest.raises(StorageFull):
        sqlite_storage.put([b"c"], None, [mark("t", "int:2"), mark("h")])
    assert stored(sqlite_storage) == [("t", "int:1", 1000.0)]


def test_a_failed_commit_keeps_no_marks(sqlite_storage, tmp_path) -> None:
    sqlite_storage.put([b"a"], None, [mark("t")])
    other = sqlite3.connect(str(tmp_path / "events.db"))
    other.execute("CREATE TRIGGER broken BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    other.commit()
    with pytest.raises(StorageFailure):
        sqlite_storage.put([b"b"], None, [mark("t", "int:2"), mark("h")])
    other.execute("DROP TRIGGER broken")
    other.commit()
    other.close()
    assert stored(sqlite_storage) == [("t", "int:1", 1000.0)]
    sqlite_storage.put([b"c"], None, [mark("h")])  # writable again; the counts were read again
    assert stored(sqlite_storage) == [("t", "int:1", 1000.0), ("h", "int:1", 1000.0)]


def test_marks_survive_a_reopen_and_stay_bounded_per_scope(tmp_path) -> None:
    path = str(tmp_path / "events.db")
    storage = SqliteStorage(path, SizeLimits(1000, 1 << 30))
    for key in ("k0", "k1", "k2"):
        storage.put([b"x"], None, [mark(key, max_keys=3)])
    storage.put([b"x"], None, [mark("k0", "int:5", max_keys=3)])  # reported again: now the newest
    storage.close()
    storage = SqliteStorage(path, SizeLimits(1000, 1 << 30))
    try:
        assert [key for key, _, _ in stored(storage)] == ["k1", "k2", "k0"]
        storage.put([b"x"], None, [mark("k3", max_keys=3)])  # the count was read at open: k1 goes
        assert [key for key, _, _ in stored(storage)] == ["k2", "k0", "k3"]
    finally:
        storage.close()


def test_forgotten_keys_go_for_every_device_and_the_bound_is_counted_again(tmp_path) -> None:
    storage = SqliteStorage(str(tmp_path / "events.db"), SizeLimits(1000, 1 << 30))
    try:
        storage.put([b"x"], None, [mark("t", device="A", max_keys=3), mark("t", device="B", max_keys=3),
                                   mark("h", device="A", max_keys=3)])
        storage.forget_report_marks("rest/r", [("timeseries", "t"), ("attributes", "h")])
        assert stored(storage) == [("h", "int:1", 1000.0)]  # h is a timeseries key: kept
        storage.put([b"x"], None, [mark("a", max_keys=3), mark("b", max_keys=3)])  # 3 now: none evicted
        assert [key for key, _, _ in stored(storage)] == ["h", "a", "b"]
    finally:
        storage.close()


def test_a_key_marked_twice_in_one_commit_keeps_the_last(sqlite_storage) -> None:
    sqlite_storage.put([b"a"], None, [mark("t", "int:1"), mark("t", "int:2", sent_at=2000.0)])
    assert stored(sqlite_storage) == [("t", "int:2", 2000.0)]
