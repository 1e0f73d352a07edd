"""One behaviour suite run against every event-storage backend (memory, sqlite) and the factory."""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from gateway.config.model import StorageConfig
from gateway.storage.base import EventStorage, StorageFailure, StorageFull
from gateway.storage.factory import create_storage
from gateway.storage.memory import RECORD_OVERHEAD_BYTES, MemoryStorage, SizeLimits
from gateway.storage.sqlite import SqliteStorage

BACKENDS = ("memory", "sqlite")
MakeStorage = Callable[..., EventStorage]


@pytest.fixture(params=BACKENDS)
def make_storage(request: pytest.FixtureRequest, tmp_path) -> Iterator[MakeStorage]:
    """Opens storages of the parametrised backend and closes every one of them afterwards."""
    opened: list[EventStorage] = []

    def make(max_records: int = 1_000_000, max_bytes: int = 1 << 30, name: str = "events.db") -> EventStorage:
        limits = SizeLimits(max_records, max_bytes)
        if request.param == "memory":
            storage: EventStorage = MemoryStorage(limits)
        else:
            storage = SqliteStorage(str(tmp_path / name), limits)
        opened.append(storage)
        return storage

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for storage in opened:
        storage.close()


def payloads_of(storage: EventStorage) -> list[bytes]:
    return [event.payload for event in storage.peek(1_000_000)]


def test_fifo_order_and_increasing_ids(make_storage: MakeStorage) -> None:
    storage = make_storage()
    for i in range(10):
        storage.put([b"e%d" % i])
    events = storage.peek(100)
    assert [e.payload for e in events] == [b"e%d" % i for i in range(10)]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert storage.count() == 10


def test_multi_payload_put_is_contiguous(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([b"a"])
    storage.put([b"b1", b"b2", b"b3"])
    storage.put([b"c"])
    events = storage.peek(10)
    assert [e.payload for e in events] == [b"a", b"b1", b"b2", b"b3", b"c"]
    b_ids = [e.id for e in events[1:4]]
    assert b_ids == list(range(b_ids[0], b_ids[0] + 3))


def test_put_accepts_bytes_like_and_refuses_text(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([bytearray(b"x"), memoryview(b"y")])
    assert payloads_of(storage) == [b"x", b"y"]
    assert all(type(e.payload) is bytes for e in storage.peek(10))
    with pytest.raises(TypeError):
        storage.put(["text"])  # type: ignore[list-item]
    storage.put([])
    assert storage.count() == 2
    storage.put(p for p in (b"g1", b"g2"))  # type: ignore[arg-type]
    storage.put((b"t1",))
    assert payloads_of(storage)[2:] == [b"g1", b"g2", b"t1"]


def test_peek_does_not_remove_and_honours_limit(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([b"1", b"2", b"3"])
    assert [e.payload for e in storage.peek(2)] == [b"1", b"2"]
    assert storage.peek(2) == storage.peek(2)
    assert storage.peek(0) == []
    assert storage.count() == 3


def test_remove_through(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([b"1", b"2", b"3", b"4"])
    events = storage.peek(10)
    storage.remove_through(events[1].id)
    assert payloads_of(storage) == [b"3", b"4"]
    assert storage.count() == 2
    storage.remove_through(events[1].id)  # already gone: nothing else removed
    assert storage.count() == 2
    storage.remove_through(events[3].id + 1000)
    assert storage.count() == 0 and storage.peek(10) == []


def test_ids_are_never_reused_after_draining(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([b"old1", b"old2"])
    last = storage.peek(10)[-1].id
    storage.remove_through(last)
    storage.put([b"new"])
    (event,) = storage.peek(10)
    assert event.id > last
    storage.remove_through(last)  # a stale acknowledgement must not delete the new event
    assert payloads_of(storage) == [b"new"]


def test_record_limit_refuses_whole_put_and_resumes_after_drain(make_storage: MakeStorage) -> None:
    storage = make_storage(max_records=5)
    storage.put([b"1", b"2", b"3"])
    with pytest.raises(StorageFull):
        storage.put([b"4", b"5", b"6"])  # would make 6: refused entirely
    assert payloads_of(storage) == [b"1", b"2", b"3"]
    storage.put([b"4", b"5"])  # exactly at the limit is fine
    with pytest.raises(StorageFull):
        storage.put([b"6"])
    assert payloads_of(storage) == [b"1", b"2", b"3", b"4", b"5"]
    storage.remove_through(storage.peek(2)[-1].id)
    storage.put([b"6", b"7"])
    assert payloads_of(storage) == [b"3", b"4", b"5", b"6", b"7"]
    stats = storage.stats()  # type: ignore[attr-defined]
    assert stats["rejected_full"] == 2 and stats["put_count"] == 3 and stats["stored"] == 5


def test_size_limit_counts_payload_bytes_plus_overhead(make_storage: MakeStorage) -> None:
    per_event = 100 + RECORD_OVERHEAD_BYTES
    storage = make_storage(max_bytes=3 * per_event)
    storage.put([b"x" * 100, b"y" * 100])
    with pytest.raises(StorageFull):
        storage.put([b"z" * 101])
    storage.put([b"z" * 100])
    assert storage.stats()["bytes"] == 3 * per_event  # type: ignore[attr-defined]
    storage.remove_through(storage.peek(1)[0].id)
    storage.put([b"w" * 100])
    assert payloads_of(storage) == [b"y" * 100, b"z" * 100, b"w" * 100]


def test_concurrent_puts_stored_exactly_once_and_contiguous(make_storage: MakeStorage) -> None:
    storage = make_storage()
    threads, puts = 16, 200
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(puts):
                storage.put([b"%d:%d:%d" % (t, i, k) for k in range(3)])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    events = storage.peek(threads * puts * 3 + 1)
    assert len(events) == threads * puts * 3 == storage.count()
    assert len({e.payload for e in events}) == len(events)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    last_seen: dict[int, int] = {}
    for n in range(0, len(events), 3):
        group = [e.payload.decode().split(":") for e in events[n:n + 3]]
        (t, i, _), *_ = group
        assert group == [[t, i, str(k)] for k in range(3)], "a put's payloads were split up"
        assert [e.id for e in events[n:n + 3]] == list(range(ids[n], ids[n] + 3))
        assert int(i) > last_seen.get(int(t), -1), "one thread's puts out of order"
        last_seen[int(t)] = int(i)


def test_wait_for_data_is_woken_by_put(make_storage: MakeStorage) -> None:
    storage = make_storage()
    assert storage.wait_for_data(0.01) is False
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(storage.wait_for_data(60)))
    waiter.start()
    storage.put([b"hello"])
    waiter.join()
    assert results == [True]
    assert storage.wait_for_data(0) is True


def test_wait_for_data_is_woken_again_after_the_queue_drained(make_storage: MakeStorage) -> None:
    storage = make_storage()
    storage.put([b"first"])
    storage.put([b"second"])  # queue already non-empty: no waiter to wake, must not matter
    storage.remove_through(storage.peek(10)[-1].id)
    assert storage.wait_for_data(0.01) is False
    results: list[bool] = []
    entered = threading.Event()

    def wait() -> None:
        entered.set()
        results.append(storage.wait_for_data(60))

    waiter = threading.Thread(target=wait)
    waiter.start()
    entered.wait()
    storage.put([b"third"])  # empty -> non-empty: wakes the waiter
    waiter.join()
    assert results == [True]
    assert payloads_of(storage) == [b"third"]


def test_close_wakes_waiters_and_later_calls_fail(make_storage: MakeStorage) -> None:
    storage = make_storage()
    results: list[bool] = []
    entered = threading.Event()

    def wait() -> None:
        entered.set()
        results.append(storage.wait_for_data(60))

    waiter = threading.Thread(target=wait)
    waiter.start()
    entered.wait()
    storage.close()
    waiter.join()
    assert results == [False]
    storage.close()  # idempotent
    for call in (lambda: storage.put([b"x"]), lambda: storage.peek(1), lambda: storage.count(),
                 lambda: storage.remove_through(1), lambda: storage.wait_for_data(0)):
        with pytest.raises(StorageFailure):
            call()


def test_close_while_putting_loses_no_acknowledged_event(make_storage: MakeStorage, tmp_path) -> None:
    storage = make_storage()
    acked: list[bytes] = []
    refused: list[BaseException] = []
    started = threading.Barrier(5)
    enough = threading.Event()

    def worker(t: int) -> None:
        started.wait()
        for i in itertools.count():  # until close refuses: a starved main thread may close late
            payload = b"%d:%d" % (t, i)
            try:
                storage.put([payload])
            except StorageFailure as exc:
                refused.append(exc)
                return
            acked.append(payload)
            if len(acked) >= 50:
                enough.set()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    started.wait()
    enough.wait()
    storage.close()
    for w in workers:
        w.join()
    assert len(refused) == 4, "every worker must see StorageFailure after close"
    if make_storage.backend == "sqlite":  # type: ignore[attr-defined]
        reopened = make_storage()
        assert sorted(payloads_of(reopened)) == sorted(acked)


# -- the factory ------------------------------------------------------------------------------------


def test_factory_builds_memory_storage() -> None:
    storage = create_storage(StorageConfig(type="memory", max_records=2, max_size_mb=1))
    try:
        assert isinstance(storage, MemoryStorage)
        storage.put([b"a", b"b"])
        with pytest.raises(StorageFull):
            storage.put([b"c"])
    finally:
        storage.close()


def test_factory_creates_the_sqlite_folder(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "gateway.db"
    storage = create_storage(StorageConfig(type="sqlite", data_file_path=str(path)))
    try:
        assert isinstance(storage, SqliteStorage)
        storage.put([b"a"])
        assert os.path.isfile(path)
    finally:
        storage.close()


def test_factory_reports_a_folder_it_cannot_create(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    path = blocker / "data" / "gateway.db"
    with pytest.raises(StorageFailure) as caught:
        create_storage(StorageConfig(type="sqlite", data_file_path=str(path)))
    assert str(blocker) in str(caught.value)


def test_factory_refuses_unknown_type_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="unknown storage type"):
        create_storage(StorageConfig(type="file"))
    with pytest.raises(ValueError):
        create_storage(StorageConfig(type="memory", max_records=0))


def test_concurrent_puts_never_pass_the_limit(make_storage: MakeStorage) -> None:
    storage = make_storage(max_records=150)
    refused = [0] * 8
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        for i in range(40):
            try:
                storage.put([b"%d:%d" % (t, i)])
            except StorageFull:
                refused[t] += 1

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert storage.count() == 150 == len(storage.peek(1000))
    assert sum(refused) == 8 * 40 - 150
    assert storage.stats()["rejected_full"] == sum(refused)  # type: ignore[attr-defined]
