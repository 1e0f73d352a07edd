"""Receipts (Idempotency-Key answers) in both storage backends: kept with the data, all or nothing,
expired, bounded per scope, and (sqlite) still there after a reopen."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.receipts import Receipt
from gateway.storage.base import EventStorage, StorageFull
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.storage.sqlite import SqliteStorage


def receipt(key: str, scope: str = "/data\n", expires: float | None = None, max_keys: int = 100) -> Receipt:
    """A receipt expiring an hour from now by default (the sqlite purge deletes by the real clock)."""
    return Receipt(scope, key, b"fp-" + key.encode(), 200, b'{"stored":1}', "application/json",
                   time.time() + 3600 if expires is None else expires, max_keys)


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[..., EventStorage]]:
    opened: list[EventStorage] = []

    def factory(max_records: int = 1000) -> EventStorage:
        limits = SizeLimits(max_records, 1 << 30)
        storage: EventStorage = (MemoryStorage(limits) if request.param == "memory"
                                 else SqliteStorage(str(tmp_path / "events.db"), limits))
        opened.append(storage)
        return storage

    yield factory
    for storage in opened:
        storage.close()


def test_a_receipt_is_found_until_it_expires(make) -> None:
    storage = make()
    storage.put([b"a"], receipt("k1"))
    found = storage.find_receipt("/data\n", "k1", time.time())
    assert found is not None and found.body == b'{"stored":1}' and found.fingerprint == b"fp-k1"
    assert found.status == 200 and found.content_type == "application/json"
    assert storage.find_receipt("/data\n", "k1", found.expires) is None
    assert storage.find_receipt("/data\n", "k1", found.expires - 1) is not None
    assert storage.find_receipt("/other\n", "k1", time.time()) is None
    assert storage.find_receipt("/data\n", "k2", time.time()) is None


def test_a_refused_put_keeps_no_receipt(make) -> None:
    storage = make(max_records=1)
    storage.put([b"a"], receipt("k1"))
    with pytest.raises(StorageFull):
        storage.put([b"b"], receipt("k2"))
    assert storage.find_receipt("/data\n", "k2", time.time()) is None
    assert storage.count() == 1


def test_the_oldest_receipts_of_a_scope_are_evicted(make) -> None:
    storage = make()
    for n in range(5):
        storage.put([b"x"], receipt(f"k{n}", max_keys=3))
    storage.put([b"x"], receipt("other", scope="/other\n", max_keys=3))
    assert [storage.find_receipt("/data\n", f"k{n}", time.time()) is not None for n in range(5)] == [
        False, False, True, True, True]
    assert storage.find_receipt("/other\n", "other", time.time()) is not None
    storage.put([b"x"], receipt("k2", max_keys=3))  # stored again: the newest now, nothing else evicted
    assert storage.find_receipt("/data\n", "k3", time.time()) is not None


def test_sqlite_keeps_receipts_across_a_reopen_and_bounds_them_there(tmp_path) -> None:
    path = str(tmp_path / "events.db")
    storage = SqliteStorage(path, SizeLimits(1000, 1 << 30))
    for n in range(3):
        storage.put([b"x"], receipt(f"k{n}", max_keys=3))
    storage.close()
    storage = SqliteStorage(path, SizeLimits(1000, 1 << 30))
    try:
        assert storage.find_receipt("/data\n", "k0", time.time()) is not None
        storage.put([b"x"], receipt("k3", max_keys=3))  # the count was read at open: k0 goes
        assert storage.find_receipt("/data\n", "k0", time.time()) is None
        assert storage.find_receipt("/data\n", "k3", time.time()) is not None
    finally:
        storage.close()
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM receipts").fetchone()[0]
    assert rows == 3


def test_sqlite_deletes_expired_receipts(tmp_path) -> None:
    path = str(tmp_path / "events.db")
    storage = SqliteStorage(path, SizeLimits(1000, 1 << 30))
    try:
        storage.put([b"x"], receipt("old", expires=1.0))  # long expired: deleted by the next write's purge
        storage._writer.receipts._purged_at = float("-inf")  # the purge runs at most once a minute
        storage.put([b"x"], receipt("new", expires=4_000_000_000.0))
    finally:
        storage.close()
    keys = [row[0] for row in sqlite3.connect(path).execute("SELECT key FROM receipts")]
    assert keys == ["new"]
