"""The machine's limit for durable requests, measured in the same run as the systems (issue 15).

Before the systems run, bench/run.py measures, in a folder on the same file system as the gateways'
SQLite files (the system's temporary directory), and on the server's CPU when pinned:

- **fsync latency**: ``os.write`` of 64 bytes + ``os.fsync`` of one file, a few hundred times
  (``raw fsync``); and SQLite commits of one small row in WAL mode with ``synchronous=FULL``, what
  ``storage.durability: power`` does per group commit (``sqlite commit``). p50 and p99 of the wall
  time of each, and the CPU time per commit (``time.process_time``: the kernel's share of an fsync
  is CPU on the same core).
- **storage CPU per put**: ``time.process_time`` of the real :class:`SqliteStorage` (and
  :class:`MemoryStorage`) while ``k`` threads put one record at a time, ``k`` = the requests in
  flight (the connections, at most the REST threads), so group commit carries what it carries in the
  gateway. It includes the fsync's kernel time and the threads' wake-ups, not the time spent waiting.
- **storage CPU per event, drained**: the same puts while one more thread drains the storage as the
  gateway's sender does (``peek_after`` from the last event read, ``READ_BATCH`` at a time, at
  least ``LINGER_S`` apart under load as the sender's linger keeps its publishes, ``remove_through``
  what it read, the empty re-check before it waits): every durable request's
  event is also read back and removed once ThingsBoard has it, which a gateway cannot skip. This is
  the ``s_put`` of the model; the puts-only figure is printed beside it.

The model (:func:`model_rps`) is an upper bound for a closed loop of ``c`` connections on one core:

- every request costs CPU ``s = s_http + s_put(c)``: ``s_http`` is the HTTP stack's CPU per request,
  the ceiling's CPU time per request in the same repetition (its CPU % of one core ÷ its req/s;
  memory storage runs at 95-98 % of the ceiling, so the gateway's non-storage work costs about as
  much), and ``s_put(c)`` is the storage CPU per event, drained, with ``c`` in flight;
- so throughput ≤ ``1 / s`` (one core busy all the time: the server's core when pinned; unpinned,
  the GIL lets one thread run Python at a time, so the bound is looser there);
- and every durable request waits for at least one commit, ``t_commit`` (the SQLite commit's p50,
  0 for ``process`` and memory), besides its own CPU, so by Little's law throughput ≤
  ``c / (t_commit + s)`` (a group commit carries at most the ``c`` requests in flight).

``limit(c) = min(1 / s, c / (t_commit + s))``. The storage alone, with nothing else to do, allows
``c / (t_commit + c × s_put)`` when every commit carries all ``c`` puts one after the other
(:func:`storage_serial_rps`), printed for reference. Nothing here asserts a speed.
"""
from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from gateway.config.model import ThingsBoardConfig
from gateway.storage.base import EventStorage
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.storage.sqlite import SYNCHRONOUS, SqliteStorage

PAYLOAD = (b'{"device":"SN-001"\n,"type":"Thermometer"\n,"attributes":{"model":"T1000","T1000":"on"}\n,"dp":[2]\n'
           b',"telemetry":[\n{"ts":1700000000000,"values":{"temperature":32.0,"humidity":67.0}}\n]\n}')
STORAGES = ("sqlite-power", "sqlite-process", "memory")
READ_BATCH = 1000  # storage.read_records_count's default: what the sender asks for at a time
#: thingsboard.sendLingerMs's default: under load the sender reads at most this often
LINGER_S = ThingsBoardConfig().send_linger_ms / 1000


def model_rps(http_cpu_s: float, put_cpu_s: float, commit_wait_s: float, in_flight: int) -> float:
    """Upper bound of req/s for ``in_flight`` closed-loop requests on one core (see the module doc).

    ``min(1 / s, in_flight / (commit_wait_s + s))`` with ``s = http_cpu_s + put_cpu_s``.
    """
    cpu = http_cpu_s + put_cpu_s
    if cpu <= 0 or in_flight < 1 or commit_wait_s < 0:
        raise ValueError("the CPU per request must be > 0, in_flight >= 1 and the commit wait >= 0")
    return min(1.0 / cpu, in_flight / (commit_wait_s + cpu))


def storage_serial_rps(put_cpu_s: float, commit_wait_s: float, in_flight: int) -> float:
    """Puts/s when each commit carries all ``in_flight`` puts, prepared one after the other, then waits.

    ``in_flight / (commit_wait_s + in_flight × put_cpu_s)``: the storage alone, nothing else on the core.
    """
    if put_cpu_s < 0 or commit_wait_s < 0 or in_flight < 1 or put_cpu_s + commit_wait_s <= 0:
        raise ValueError("put CPU and commit wait must be >= 0 (not both 0) and in_flight >= 1")
    return in_flight / (commit_wait_s + in_flight * put_cpu_s)


def percentile(values: Iterable[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered))) - 1))]


@dataclass
class Latency:
    """Wall-clock latencies of one operation repeated (ms), and its CPU per operation (µs)."""

    count: int
    p50_ms: float
    p99_ms: float
    cpu_us: float

    @classmethod
    def of(cls, seconds: list[float], cpu_s: float) -> Latency:
        return cls(len(seconds), percentile(seconds, 50) * 1e3, percentile(seconds, 99) * 1e3,
                   cpu_s / len(seconds) * 1e6 if seconds else float("nan"))


def raw_fsync(folder: str, count: int) -> Latency:
    """``count`` times: write 64 bytes to one file in ``folder`` and fsync it."""
    path = os.path.join(folder, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    try:
        cpu0 = time.process_time()
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, b"x" * 64)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu0
    finally:
        os.close(fd)
        os.unlink(path)
    return Latency.of(times, cpu)


def sqlite_commits(folder: str, count: int, synchronous: str = SYNCHRONOUS["power"]) -> Latency:
    """``count`` autocommitted INSERTs of one small row, WAL mode, ``synchronous`` as the gateway sets it."""
    path = os.path.join(folder, f"commit-probe-{synchronous}.db")
    conn = sqlite3.connect(path, isolation_level=None)
    times: list[float] = []
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
        cpu0 = time.process_time()
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events(payload) VALUES (?)", (PAYLOAD,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu0
    finally:
        conn.close()
    return Latency.of(times, cpu)


@dataclass
class PutCost:
    """Storage CPU per put with ``threads`` putting concurrently, and the puts each commit carried."""

    storage: str
    threads: int
    puts: int
    cpu_us: float  # puts only
    puts_per_commit: float
    drained_cpu_us: float = float("nan")  # put, read back and removed (see the module doc)


def new_storage(kind: str, folder: str) -> EventStorage:
    """A fresh storage of ``kind`` (sqlite-power, sqlite-process, memory), a new file in ``folder``."""
    limits = SizeLimits(max_records=100_000_000, max_bytes=1 << 40)
    if kind == "memory":
        return MemoryStorage(limits)
    durability = kind.removeprefix("sqlite-")
    return SqliteStorage(os.path.join(folder, f"puts-{durability}-{time.monotonic_ns()}.db"), limits, durability)


def put_cost(kind: str, folder: str, threads: int, puts_per_thread: int) -> PutCost:
    """CPU per put of storage ``kind`` (sqlite-power, sqlite-process, memory) from ``threads`` threads,
    then CPU per event when one more thread drains it meanwhile."""
    cpu_us, per_commit = _cpu_per_put(kind, folder, threads, puts_per_thread, drain=False)
    drained_us, _ = _cpu_per_put(kind, folder, threads, puts_per_thread, drain=True)
    return PutCost(kind, threads, threads * puts_per_thread, cpu_us, per_commit, drained_us)


def drain_like_sender(storage: EventStorage, total: float, stop: threading.Event | None = None) -> None:
    """Read and remove ``total`` events (or until ``stop`` is set) the way the gateway's sender does,
    lingering as it does."""
    last = removed = last_batch = 0
    last_read = 0.0
    while removed < total and not (stop is not None and stop.is_set()):
        events = storage.peek_after(last, READ_BATCH)
        if not events:
            if not storage.peek_after(last, 1):
                storage.wait_for_data(0.005)
            continue
        if len(events) < READ_BATCH and (len(events) >= 2 or last_batch >= 2):
            wait = last_read + LINGER_S - time.monotonic()  # under load: reads at least LINGER_S apart
            if wait > 0:
                time.sleep(wait)
                continue  # then read the fuller batch
        last_read, last_batch = time.monotonic(), len(events)
        last = events[-1].id
        storage.remove_through(last)
        removed += len(events)


def _cpu_per_put(kind: str, folder: str, threads: int, puts_per_thread: int, drain: bool) -> tuple[float, float]:
    """(CPU µs per put, puts per commit) with ``threads`` putters (and a drain thread when ``drain``)."""
    storage = new_storage(kind, folder)
    puts = threads * puts_per_thread
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        for _ in range(puts_per_thread):
            storage.put([PAYLOAD])

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    if drain:
        workers.append(threading.Thread(target=drain_like_sender, args=(storage, puts), daemon=True))
    try:
        for w in workers[:threads]:
            w.start()
        cpu0 = time.process_time()
        for w in workers[threads:]:
            w.start()
        start.wait()
        for w in workers:
            w.join()
        cpu = time.process_time() - cpu0
        stats = storage.stats()
    finally:
        storage.close()
    if drain and stats["stored"]:  # the drain thread stopped early (it failed): the figure would lie
        raise RuntimeError(f"the drain left {stats['stored']} of {puts} events in the {kind} storage")
    commits = stats.get("commits", 0)
    return cpu / puts * 1e6, puts / commits if commits else float("nan")


@dataclass
class Limits:
    """Everything measured before the run; ``put_costs`` by (storage, threads)."""

    folder: str
    raw_fsync: Latency
    sqlite_commit: Latency
    put_costs: dict[str, PutCost] = field(default_factory=dict)
    seconds: float = 0.0

    @staticmethod
    def key(storage: str, threads: int) -> str:
        return f"{storage}@{threads}"

    def put_cpu_s(self, storage: str, threads: int) -> float | None:
        """The model's s_put: storage CPU per event with ``threads`` in flight, drained (puts only if not measured)."""
        cost = self.put_costs.get(self.key(storage, threads))
        if cost is None:
            return None
        return (cost.cpu_us if math.isnan(cost.drained_cpu_us) else cost.drained_cpu_us) / 1e6

    def commit_wait_s(self, storage: str) -> float:
        """What a durable request waits for besides CPU: one fsynced commit for power, nothing otherwise."""
        return self.sqlite_commit.p50_ms / 1e3 if storage == "sqlite-power" else 0.0

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def measure_limits(connections: Iterable[int], max_threads: int, fsyncs: int = 300, puts: int = 3000,
                   storages: Iterable[str] = STORAGES, cpus: set[int] | None = None,
                   folder: str | None = None) -> Limits:
    """fsync latencies, then CPU per put of each storage at each in-flight count (≤ ``max_threads``).

    ``puts`` is the total per measurement (split between the threads); ``cpus`` pins this process
    meanwhile (the server's CPU in a pinned run), ``folder`` defaults to a new temporary folder.
    """
    original = os.sched_getaffinity(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-limits-", dir=folder) as scratch:
        try:
            if cpus:
                os.sched_setaffinity(0, cpus)
            limits = Limits(scratch, raw_fsync(scratch, fsyncs), sqlite_commits(scratch, fsyncs))
            for threads in sorted({max(1, min(c, max_threads)) for c in connections}):
                for kind in storages:
                    cost = put_cost(kind, scratch, threads, max(1, puts // threads))
                    limits.put_costs[Limits.key(kind, threads)] = cost
        finally:
            os.sched_setaffinity(0, original)
    limits.seconds = time.perf_counter() - started
    return limits


def storage_of(system: str) -> str | None:
    """The storage key of a gateway system name (gateway-sqlite -> sqlite-power); None for the ceiling."""
    if not system.startswith("gateway-"):
        return None
    storage, _, rest = system.removeprefix("gateway-").partition("-")
    if storage == "sqlite":
        return "sqlite-process" if rest.startswith("process") else "sqlite-power"
    return storage


def describe_limits(limits: Limits, connections: Iterable[int], max_threads: int) -> list[str]:
    """The limits as markdown lines: fsync latency, CPU per put, and the storage-alone serial model."""
    fs, sq = limits.raw_fsync, limits.sqlite_commit
    lines = [f"Limits measured before the run ({limits.seconds:.1f} s, in {os.path.dirname(limits.folder)}):", "",
             f"- raw fsync (write 64 B + fsync): p50 {fs.p50_ms:.3f} ms, p99 {fs.p99_ms:.3f} ms, "
             f"CPU {fs.cpu_us:.0f} µs each ({fs.count} times)",
             f"- SQLite commit of one row (WAL, synchronous=FULL): p50 {sq.p50_ms:.3f} ms, p99 {sq.p99_ms:.3f} ms, "
             f"CPU {sq.cpu_us:.0f} µs each ({sq.count} times)", "",
             "| in flight (threads) | storage | CPU µs per put | CPU µs per event, drained (the model's s_put) "
             "| puts per commit | storage alone, serial: c ÷ (commit p50 + c × s_put) puts/s |",
             "|---|---|---|---|---|---|"]
    for threads in sorted({max(1, min(c, max_threads)) for c in connections}):
        for cost in limits.put_costs.values():
            if cost.threads != threads:
                continue
            s_put = limits.put_cpu_s(cost.storage, threads) or 0.0
            serial = storage_serial_rps(s_put, limits.commit_wait_s(cost.storage), threads)
            per_commit = "—" if cost.puts_per_commit != cost.puts_per_commit else f"{cost.puts_per_commit:.1f}"
            lines.append(f"| {threads} | {cost.storage} | {cost.cpu_us:.1f} | {cost.drained_cpu_us:.1f} | "
                         f"{per_commit} | {serial:,.0f} |")
    return lines


def http_cpu_s(ceiling_rps: float, ceiling_cpu_pct: float) -> float | None:
    """The HTTP stack's CPU seconds per request: the ceiling's CPU (% of one core) ÷ its req/s."""
    if ceiling_rps <= 0 or not ceiling_cpu_pct > 0:
        return None
    return ceiling_cpu_pct / 100 / ceiling_rps


def model_for(limits: Limits | None, system: str, connections: int, max_threads: int,
              http_cpu: float | None) -> float | None:
    """limit(c) for one run of ``system`` (None without limits or ``http_cpu``, or for the ceiling itself)."""
    storage = storage_of(system)
    if limits is None or storage is None or not http_cpu:
        return None
    threads = max(1, min(connections, max_threads))
    put_cpu = limits.put_cpu_s(storage, threads)
    if put_cpu is None:
        return None
    return model_rps(http_cpu, put_cpu, limits.commit_wait_s(storage), threads)

