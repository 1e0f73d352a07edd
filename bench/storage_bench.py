"""Prints puts/s and CPU µs per put for each storage backend with 1 and 8 threads (not a test)."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.storage.base import EventStorage  # noqa: E402
from gateway.storage.memory import MemoryStorage, SizeLimits  # noqa: E402
from gateway.storage.sqlite import SqliteStorage  # noqa: E402

PAYLOAD = b'{"device":"SN-1","telemetry":[{"ts":1700000000000,"values":{"temperature":21.5}}]}' * 2
SECONDS = 2.0


def run(storage: EventStorage, threads: int) -> tuple[float, float]:
    """Put single-payload events from ``threads`` threads for SECONDS; (puts/s, CPU µs per put)."""
    done = threading.Event()
    counts = [0] * threads

    def worker(slot: int) -> None:
        payloads = [PAYLOAD]
        n = 0
        while not done.is_set():
            storage.put(payloads)
            n += 1
        counts[slot] = n

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(SECONDS)
    done.set()
    for w in workers:
        w.join()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    total = sum(counts)
    return total / wall, cpu / total * 1e6


def main() -> None:
    limits = SizeLimits(max_records=100_000_000, max_bytes=1 << 40)
    with tempfile.TemporaryDirectory() as folder:
        for threads in (1, 8):
            for name in ("memory", "sqlite"):
                if name == "memory":
                    storage: EventStorage = MemoryStorage(limits)
                else:
                    storage = SqliteStorage(os.path.join(folder, f"bench-{threads}.db"), limits)
                try:
                    rate, cpu = run(storage, threads)
                    extra = ""
                    if name == "sqlite":
                        stats = storage.stats()  # type: ignore[attr-defined]
                        extra = f", {stats['put_count'] / max(stats['commits'], 1):.1f} puts/commit"
                    print(f"{name:7} {threads} thread(s): {rate:10.0f} puts/s, {cpu:6.1f} µs CPU/put{extra}")
                finally:
                    storage.close()


if __name__ == "__main__":
    main()
