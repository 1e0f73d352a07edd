"""The SQLite storage counts what remove_through removes from what its peeks read (gateway/storage/peeked.py):
whatever order the sender reads and removes in, the counters must equal what the file holds."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from gateway.storage.memory import RECORD_OVERHEAD_BYTES, SizeLimits
from gateway.storage.peeked import PeekedSizes
from gateway.storage.sqlite import SqliteStorage


def test_a_removal_inside_what_was_read_is_counted_from_the_reads() -> None:
    peeked = PeekedSizes()
    peeked.read(0, [(1, b"a"), (2, b"bb")])
    peeked.read(2, [(3, b"ccc")])  # goes on where the last read ended
    assert peeked.remove_through(0, 2) == (2, 3, 2)
    assert peeked.remove_through(2, 3) == (1, 3, 3)
    assert peeked.remove_through(3, 4) is None  # nothing read past 3: the database answers


def test_what_was_not_read_here_is_left_to_the_database() -> None:
    peeked = PeekedSizes()
    peeked.read(5, [(6, b"a"), (7, b"b")])
    assert peeked.remove_through(0, 6) is None  # rows 1-5 were never read here
    assert peeked.remove_through(5, 9) is None  # nor rows after 7
    peeked.read(3, [(4, b"x")])  # a resend reads from further back: start over
    assert peeked.start == 3 and list(peeked.entries) == [(4, 1)]
    assert peeked.remove_through(3, 4) == (1, 1, 4)


def truth(path: Path, after: int) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        count, size = conn.execute("SELECT count(*), total(length(payload)) FROM events WHERE id > ?",
                                   (after,)).fetchone()
    return count, int(size) + RECORD_OVERHEAD_BYTES * count


@pytest.mark.parametrize("seed", range(5))
def test_counters_match_the_file_whatever_the_reads_and_removals(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "gateway.db"
    storage = SqliteStorage(str(path), SizeLimits(max_records=100_000, max_bytes=1 << 30))
    try:
        last_sent = 0
        for step in range(300):
            action = rng.random()
            if action < 0.4:
                storage.put([b"x" * rng.randint(1, 50) for _ in range(rng.randint(1, 4))])
            elif action < 0.7:
                events = storage.peek_after(last_sent, rng.randint(1, 6))
                if events:
                    last_sent = events[-1].id
            elif action < 0.8:  # a new session resends from the oldest stored event
                last_sent = 0
            else:  # acknowledged: up to what was sent, or (rarely) past it
                through = last_sent if rng.random() < 0.8 else last_sent + rng.randint(1, 5)
                storage.remove_through(through)
            trimmed = storage._trimmed_through
            stats = storage.stats()
            assert (stats["stored"], stats["bytes"]) == truth(path, trimmed), f"step {step}"
            assert storage.peek_after(last_sent, 1_000) == [e for e in storage.peek(1_000) if e.id > last_sent]
    finally:
        storage.close()
