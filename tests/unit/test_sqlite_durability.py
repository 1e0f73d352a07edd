"""SQLite storage only: restart, SIGKILL after acknowledgement, group commit and disk failures."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.storage.base import StorageFailure
from gateway.storage.memory import RECORD_OVERHEAD_BYTES, SizeLimits
from gateway.storage.sqlite import SqliteStorage

ROOT = Path(__file__).resolve().parents[2]
LIMITS = SizeLimits(max_records=1_000_000, max_bytes=1 << 30)


@pytest.fixture
def opened() -> Iterator[list[SqliteStorage]]:
    """Storages a test opens; each is closed afterwards even when the test fails."""
    storages: list[SqliteStorage] = []
    yield storages
    for storage in storages:
        storage.close()


def open_storage(opened: list[SqliteStorage], path: Path, limits: SizeLimits = LIMITS) -> SqliteStorage:
    storage = SqliteStorage(str(path), limits)
    opened.append(storage)
    return storage


def run_child(script: str, *args: str) -> subprocess.Popen[str]:
    """Start ``script`` in a fresh interpreter that can import the gateway package."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_reopen_gives_the_same_events_in_order(opened: list[SqliteStorage], tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    first = open_storage(opened, path)
    first.put([b"a", b"b"])
    first.put([b"c"])
    first.remove_through(first.peek(1)[0].id)
    before, stats_before = first.peek(10), first.stats()
    first.close()
    again = open_storage(opened, path)
    assert again.peek(10) == before
    assert [e.payload for e in before] == [b"b", b"c"]
    assert again.count() == 2
    assert again.stats()["bytes"] == stats_before["bytes"]
    last = before[-1].id
    again.remove_through(last)
    again.close()
    third = open_storage(opened, path)  # emptied, then reopened: ids still never go back
    third.put([b"d"])
    assert third.peek(1)[0].id > last


def rows_in_file(path: Path) -> list[bytes]:
    """The payloads physically in the database file, read over a separate connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT payload FROM events ORDER BY id")]
    finally:
        conn.close()


def test_remove_through_while_idle_deletes_the_rows_at_once(opened: list[SqliteStorage], tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    storage = open_storage(opened, path)
    storage.put([b"a", b"b", b"c"])
    storage.remove_through(storage.peek(2)[-1].id)
    assert rows_in_file(path) == [b"c"]  # no commit was running: deleted without waiting for one
    storage.remove_through(10**12)  # past the newest id: later events must still be kept
    assert rows_in_file(path) == [] and storage.count() == 0
    storage.put([b"d"])
    assert [e.payload for e in storage.peek(10)] == [b"d"] and rows_in_file(path) == [b"d"]


def test_removals_during_commits_leave_file_and_counters_consistent(opened: list[SqliteStorage],
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    storage = open_storage(opened, path)
    threads, puts = 4, 150
    start = threading.Barrier(threads + 1)
    def worker(t: int) -> None:
        start.wait()
        for i in range(puts):
            storage.put([b"%d:%d" % (t, i), b"%d:%d+" % (t, i)])

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    removed = 0
    while any(w.is_alive() for w in workers):  # the sender's pattern, while puts commit
        events = storage.peek(7)
        if events:
            storage.remove_through(events[-1].id)
            removed += len(events)
    for w in workers:
        w.join()
    left = storage.peek(10_000)
    assert removed + len(left) == 2 * threads * puts
    stats = storage.stats()
    assert stats["stored"] == len(left) == storage.count()
    assert stats["bytes"] == sum(len(e.payload) + RECORD_OVERHEAD_BYTES for e in left)
    storage.close()
    assert rows_in_file(path) == [e.payload for e in left]  # every removal reached the file
    again = open_storage(opened, path)
    assert again.peek(10_000) == left and again.count() == len(left)


def test_second_opener_of_the_same_file_is_refused(opened: list[SqliteStorage], tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    open_storage(opened, path)
    with pytest.raises(StorageFailure, match="in use"):
        open_storage(opened, path)


KILLED_WRITER = """
    import sys, threading
    from gateway.storage.memory import RECORD_OVERHEAD_BYTES, SizeLimits
    from gateway.storage.sqlite import SqliteStorage
    storage = SqliteStorage(sys.argv[1], SizeLimits(10_000_000, 1 << 30), durability=sys.argv[2])
    out = threading.Lock()
    def work(t):
        i = 0
        while True:
            storage.put([b"%d:%d:0" % (t, i), b"%d:%d:1" % (t, i)])
            with out:
                print(f"{t}:{i}", flush=True)
            i += 1
    for t in range(4):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()
"""


@pytest.mark.parametrize("durability", ["power", "process"])
def test_every_acknowledged_put_survives_sigkill(opened: list[SqliteStorage], tmp_path: Path,
                                                 durability: str) -> None:
    path = tmp_path / "gateway.db"
    child = run_child(KILLED_WRITER, str(path), durability)
    acked: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(line.strip())
            if len(acked) >= 300:
                break
        child.send_signal(signal.SIGKILL)  # right after put returned, with puts still in flight
    finally:
        child.kill()
        _, err = child.communicate()
    assert len(acked) >= 300, f"child stopped early: {err}"
    storage = open_storage(opened, path)
    events = storage.peek(10_000_000)
    stored = [e.payload.decode() for e in events]
    for ack in acked:
        assert f"{ack}:0" in stored and f"{ack}:1" in stored, f"acknowledged put {ack} was lost"
    for n in range(0, len(stored), 2):  # every put, acknowledged or not, is whole and contiguous
        assert stored[n].endswith(":0") and stored[n + 1] == stored[n][:-1] + "1"
        assert events[n + 1].id == events[n].id + 1


def test_concurrent_puts_share_commits(opened: list[SqliteStorage], tmp_path: Path) -> None:
    storage = open_storage(opened, tmp_path / "gateway.db")
    threads, puts = 8, 100
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        start.wait()
        for i in range(puts):
            storage.put([b"%d:%d" % (t, i)])

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = storage.stats()
    assert stats["put_count"] == threads * puts == stats["stored"]
    assert 0 < stats["commits"] < stats["put_count"], "every put paid for its own transaction"


def test_path_inside_a_regular_file_is_a_clear_failure(opened: list[SqliteStorage], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    path = blocker / "gateway.db"  # a file where a folder is expected: refused even for root
    with pytest.raises(StorageFailure) as caught:
        open_storage(opened, path)
    assert str(path) in str(caught.value)
    good = open_storage(opened, tmp_path / "good.db")  # other storages are unaffected
    good.put([b"still fine"])
    assert good.count() == 1


def test_corrupt_database_is_a_clear_failure(opened: list[SqliteStorage], tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is not an sqlite database " * 200)
    with pytest.raises(StorageFailure, match="not a database") as caught:
        open_storage(opened, path)
    assert str(path) in str(caught.value)


DISK_FULL_WRITER = """
    import resource, signal, sys
    from gateway.storage.base import StorageFailure
    from gateway.storage.memory import RECORD_OVERHEAD_BYTES, SizeLimits
    from gateway.storage.sqlite import SqliteStorage
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG
    storage = SqliteStorage(sys.argv[1], SizeLimits(1_000_000, 1 << 30))
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))  # the "disk" holds 256 KiB a file
    big = b"x" * 20_000
    for i in range(1000):
        try:
            storage.put([b"%d:" % i + big])
        except StorageFailure as exc:
            print("failed", i, exc, flush=True)
            break
        print("acked", i, flush=True)
    try:
        storage.put([b"still-full:" + big])
        print("unexpected success", flush=True)
    except StorageFailure:
        print("still failing", flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the operator frees space
    storage.put([b"recovered:" + big])
    print("recovered", storage.stats()["failures"], flush=True)
    storage.close()
"""


def test_disk_full_fails_puts_and_the_writer_recovers(opened: list[SqliteStorage], tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    child = run_child(DISK_FULL_WRITER, str(path))
    out, err = child.communicate(timeout=120)
    lines = out.splitlines()
    assert child.returncode == 0, err
    acked = [line.split()[1] for line in lines if line.startswith("acked")]
    failed = [line for line in lines if line.startswith("failed")]
    assert acked and len(failed) == 1, out
    assert str(path) in failed[0] and "cannot store events" in failed[0]
    assert "still failing" in lines and lines[-1] == "recovered 2"
    storage = open_storage(opened, path)
    prefixes = [e.payload.split(b":")[0].decode() for e in storage.peek(10_000)]
    assert prefixes == [*acked, "recovered"], "a failed put left data behind or an acked one is gone"


@pytest.mark.parametrize(("durability", "synchronous"), [("power", 2), ("process", 1)])  # FULL, NORMAL
def test_the_durability_level_sets_how_commits_are_synced(opened: list[SqliteStorage], tmp_path: Path,
                                                          durability: str, synchronous: int) -> None:
    storage = SqliteStorage(str(tmp_path / "gateway.db"), LIMITS, durability=durability)
    opened.append(storage)
    assert storage._writer.conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous  # white box: the commit path
    assert storage._writer.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    storage.put([b"a"])
    assert [e.payload for e in storage.peek(10)] == [b"a"]


def test_an_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown durability 'fsync'; expected one of power, process"):
        SqliteStorage(str(tmp_path / "gateway.db"), LIMITS, durability="fsync")


@pytest.mark.parametrize("how", ["sqlite error", "unexpected exception"])
def test_a_failed_commit_gives_back_the_room_its_puts_took(opened: list[SqliteStorage], tmp_path: Path,
                                                          how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Puts are counted against the limits when they join a batch; a batch that fails must release them."""
    storage = open_storage(opened, tmp_path / "gateway.db", SizeLimits(max_records=2, max_bytes=1 << 20))
    real_commit = storage._commit

    def failing_commit(*args: object) -> str | None:
        if how == "sqlite error":
            return "cannot store events: disk I/O error"
        raise RuntimeError("the writer broke")

    monkeypatch.setattr(storage, "_commit", failing_commit)
    with pytest.raises(StorageFailure):
        storage.put([b"a", b"b"])
    monkeypatch.setattr(storage, "_commit", real_commit)
    storage.put([b"c", b"d"])  # the failed two no longer count: room for two
    assert [e.payload for e in storage.peek(10)] == [b"c", b"d"]
    stats = storage.stats()
    assert stats["failures"] == 1 and stats["put_count"] == 1 and stats["rejected_full"] == 0


def test_a_put_queued_while_a_removal_takes_the_lead_is_committed_and_answered(
        opened: list[SqliteStorage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """remove_through can become the leader when no commit runs; a put arriving while it leads waits
    for a hand-over, which the trim's leader must make: the put must return, its data stored."""
    storage = open_storage(opened, tmp_path / "gateway.db")
    storage.put([b"a", b"b"])
    through = storage.peek(10)[-1].id
    real_lead = storage._lead
    leading = threading.Event()

    def slow_lead(*args: object) -> None:
        if threading.current_thread().name == "trimmer":
            leading.set()
            time.sleep(0.3)  # the window: the trimmer holds the lead, its commit has not begun
        real_lead(*args)

    monkeypatch.setattr(storage, "_lead", slow_lead)
    trimmer = threading.Thread(target=storage.remove_through, args=(through,), name="trimmer")
    trimmer.start()
    assert leading.wait(5)
    putter = threading.Thread(target=storage.put, args=([b"c"],))
    putter.start()
    putter.join(10)
    trimmer.join(10)
    assert not putter.is_alive(), "the put waits forever for a hand-over nobody makes"
    assert [e.payload for e in storage.peek(10)] == [b"c"]


@pytest.mark.parametrize(("read", "what"), [
    (lambda s: s.peek(10), "cannot read events from"),
    (lambda s: s.remove_through(10**9), "cannot remove events from"),
    (lambda s: s.find_receipt("scope", "key", time.time()), "cannot read idempotency keys from"),
    (lambda s: s.report_marks("scope"), "cannot read reportStrategy state from"),
    (lambda s: s.forget_report_marks("scope", [("device", "key")]), "cannot delete reportStrategy state from"),
], ids=["peek", "remove_through", "find_receipt", "report_marks", "forget_report_marks"])
def test_a_failing_read_names_what_and_the_file_and_puts_go_on(opened: list[SqliteStorage], tmp_path: Path,
                                                              read: object, what: str) -> None:
    """Reads go through one connection; when SQLite fails there the caller gets a StorageFailure, not sqlite3's."""
    path = tmp_path / "gateway.db"
    storage = open_storage(opened, path)
    storage.put([b"a"])
    healthy = storage._reader  # white box: break the reader connection only
    broken = sqlite3.connect(":memory:", check_same_thread=False)
    broken.close()  # any use raises sqlite3.ProgrammingError, an sqlite3.Error
    storage._reader = broken
    try:
        with pytest.raises(StorageFailure, match=f"{what} {path}"):
            read(storage)  # type: ignore[operator]
    finally:
        storage._reader = healthy
    storage.put([b"b"])
    assert [e.payload for e in storage.peek(10)] == [b"a", b"b"]


def test_a_failing_delete_of_delivered_rows_is_logged_and_the_next_commit_deletes_them(
        opened: list[SqliteStorage], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Removed events leave the queue at once; their rows, when deleting them fails, go with the next commit."""
    path = tmp_path / "gateway.db"
    storage = open_storage(opened, path)
    storage.put([b"a"])
    [event] = storage.peek_after(0, 10)  # what the sender read: removing it needs no query
    healthy = storage._reader  # white box: break the reader connection only
    broken = sqlite3.connect(":memory:", check_same_thread=False)
    broken.close()
    storage._reader = broken
    try:
        with caplog.at_level(logging.WARNING):
            storage.remove_through(event.id)  # no commit runs: the rows are deleted here, and that fails
    finally:
        storage._reader = healthy
    assert f"cannot delete delivered events from {path}" in caplog.text
    assert storage.count() == 0
    storage.put([b"b"])
    with closing(sqlite3.connect(path)) as check:
        assert [row[0] for row in check.execute("SELECT payload FROM events")] == [b"b"]
