"""The synthetic limit (issue 15): what an app with no cost of its own reaches with the real storage.

``threads`` threads stand for the gateway's request threads. Each one, in a loop, spends the
ceiling's CPU per request (a Python loop on its own CPU clock, holding the GIL as request code does),
then puts one record into the real storage and waits for it, as a request waits for its 200. One
more thread drains the storage the way the gateway's sender does (:func:`bench.limits.drain_like_sender`). Run
pinned to the server's CPU, its throughput is what that storage allows for that much HTTP work on
this machine: the HTTP stack's CPU, the storage's own CPU, the fsync, the wake-ups and GIL
hand-overs, and the time the core stands idle because every thread waits for the same fsync. The
closed-form model in bench/limits.py leaves out the last three.

A gateway row at 100 % of this limit costs nothing beyond the ceiling's HTTP work and its storage.
A target above this limit (as a share of the ceiling) cannot be met by the code around the storage;
only a change to the storage's group commit, or a faster disk, can move the limit. Nothing here
asserts a speed.
"""
from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from bench.limits import PAYLOAD, drain_like_sender, http_cpu_s, new_storage, storage_of
from bench.report import RunResult


@dataclass
class Synthetic:
    """One synthetic measurement: ``threads`` threads, each spending ``http_cpu_us`` then one put."""

    storage: str
    threads: int
    http_cpu_us: float
    rps: float
    busy: float  # share of one core the process used (1.0 = always busy)
    puts_per_commit: float  # NaN for memory storage


def spend_cpu(seconds: float) -> None:
    """Run Python on this thread's CPU clock for ``seconds`` (the GIL is held, as request code holds it)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def synthetic_rps(kind: str, http_cpu: float, threads: int, seconds: float, warmup: float = 0.5,
                  folder: str | None = None) -> Synthetic:
    """Measure the synthetic limit of storage ``kind`` (see the module doc) for ``seconds`` after ``warmup``."""
    if http_cpu < 0 or threads < 1 or seconds <= 0:
        raise ValueError("the HTTP CPU must be >= 0, threads >= 1 and seconds > 0")
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-", dir=folder) as scratch:
        storage = new_storage(kind, scratch)
        stop = threading.Event()
        done = [0] * threads
        payloads = [PAYLOAD]

        failures: list[BaseException] = []

        def request(slot: int) -> None:
            try:
                while not stop.is_set():
                    spend_cpu(http_cpu)
                    storage.put(payloads)
                    done[slot] += 1
            except BaseException as exc:  # a thread gone would leave a figure for fewer threads
                failures.append(exc)
                stop.set()

        workers = [threading.Thread(target=request, args=(i,), daemon=True) for i in range(threads)]
        workers.append(threading.Thread(target=drain_like_sender, args=(storage, float("inf"), stop), daemon=True))
        try:
            for worker in workers:
                worker.start()
            time.sleep(warmup)
            count0, commits0 = sum(done), storage.stats().get("commits", 0)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(seconds)
            count, commits = sum(done) - count0, storage.stats().get("commits", 0) - commits0
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            stop.set()
            for worker in workers:
                worker.join()
            storage.close()
    if failures:
        raise RuntimeError(f"a synthetic request thread failed on the {kind} storage: {failures[0]!r}")
    per_commit = count / commits if commits else float("nan")
    return Synthetic(kind, threads, http_cpu * 1e6, count / wall, cpu / wall, per_commit)


def measure_synthetic(results: list[RunResult], threads_of: dict[str, int], seconds: float,
                      cpus: set[int] | None = None) -> dict[tuple[str, int, str], Synthetic]:
    """The synthetic limit for every pinned (scenario, connections) that has a ceiling and gateway runs.

    The HTTP CPU is the median over repetitions of the ceiling's CPU per request; ``threads_of`` gives
    each storage's request threads (a run has min(connections, threads) in flight in the app).
    Keyed by (scenario, connections, storage); ``cpus`` pins this process meanwhile.
    """
    cases: dict[tuple[str, int], set[str]] = {}
    http: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if not r.pin or r.messages_per_request != 1 or r.load.tool == "mqtt-rpc":
            continue
        key = (r.scenario, r.connections)
        if r.system == "ceiling":
            cpu = http_cpu_s(r.load.rps, r.cpu_pct)
            if cpu:
                http.setdefault(key, []).append(cpu)
        elif (storage := storage_of(r.system)) in threads_of:
            cases.setdefault(key, set()).add(storage)
    original = os.sched_getaffinity(0)
    measured: dict[tuple[str, int, str], Synthetic] = {}
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        for (scenario, conns), storages in cases.items():
            if not http.get((scenario, conns)):
                continue
            for storage in sorted(storages):
                threads = max(1, min(conns, threads_of[storage]))
                measured[(scenario, conns, storage)] = synthetic_rps(storage, median(http[(scenario, conns)]),
                                                                     threads, seconds)
    finally:
        os.sched_setaffinity(0, original)
    return measured


def synthetic_table(results: list[RunResult], measured: dict[tuple[str, int, str], Synthetic]) -> list[str]:
    """Markdown: each synthetic limit beside the ceiling and the gateway's median (pinned runs)."""
    if not measured:
        return []
    lines = ["Synthetic limit (pinned; bench/synthetic.py): as many threads as requests in flight in the app, each "
             "spending the ceiling's CPU per request, then one put into the real storage, drained as the sender "
             "does. What that storage allows for the ceiling's HTTP work on this core, idle time included:", "",
             "| scenario | conns | system | threads | ceiling CPU µs per request | synthetic req/s | "
             "synthetic ÷ ceiling | core busy | puts per commit | gateway req/s (median) | gateway ÷ synthetic |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (scenario, conns, storage), synth in measured.items():
        ceiling = _median_rps(results, scenario, conns, "ceiling")
        for system in _systems(results, scenario, conns, storage):
            gateway = _median_rps(results, scenario, conns, system)
            per_commit = "—" if math.isnan(synth.puts_per_commit) else f"{synth.puts_per_commit:.1f}"
            lines.append(
                f"| {scenario} | {conns} | {system} | {synth.threads} | {synth.http_cpu_us:.0f} | {synth.rps:,.0f} | "
                f"{_share(synth.rps, ceiling)} | {synth.busy:.0%} | {per_commit} | {gateway:,.0f} | "
                f"{_share(gateway, synth.rps)} |")
    return lines


def _systems(results: Iterable[RunResult], scenario: str, conns: int, storage: str) -> list[str]:
    """The pinned gateway systems of ``storage`` run in (scenario, conns), in the order they ran."""
    names: dict[str, None] = {}
    for r in results:
        if r.pin and r.scenario == scenario and r.connections == conns and storage_of(r.system) == storage:
            names[r.system] = None
    return list(names)


def _median_rps(results: Iterable[RunResult], scenario: str, conns: int, system: str) -> float:
    rates = [r.load.rps for r in results
             if r.pin and r.scenario == scenario and r.connections == conns and r.system == system]
    return median(rates) if rates else float("nan")


def _share(value: float, of: float) -> str:
    return "—" if math.isnan(of) or not of else f"{value / of:.1%}"
