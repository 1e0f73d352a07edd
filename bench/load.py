"""Drives load at a server: wrk with a generated Lua script, or a bounded multi-process Python client."""
from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass

from bench.scenarios import Scenario
from bench.systems import pinned


@dataclass
class LoadResult:
    """What the load generator saw: answered requests by class and latency percentiles (ms)."""

    tool: str
    seconds: float
    requests: int  # responses received
    non_2xx: int  # responses with a status >= 400 (wrk: errors.status)
    socket_errors: int  # connect/read/write errors and timeouts
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def acknowledged(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(port: int, scenario: Scenario, connections: int, seconds: float, workdir: str,
            cpus: set[int] | None, threads: int = 1) -> LoadResult:
    """``wrk -c connections -d seconds`` with the scenario's Lua script; bounded by a hard timeout."""
    script = os.path.join(workdir, f"{scenario.name}.lua")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(scenario.wrk_lua())
    threads = max(1, min(threads, connections))
    command = [wrk_binary() or "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}{scenario.path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          preexec_fn=pinned(cpus), check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            f = line.split()[1:]
            duration_us, total = int(f[0]), int(f[1])
            connect, read, write, status, timeout = (int(x) for x in f[2:7])
            return LoadResult("wrk", duration_us / 1e6, total, status, connect + read + write + timeout,
                              float(f[7]) / 1000, float(f[8]) / 1000, float(f[9]) / 1000)
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")


# ---------------------------------------------------------------- Python fallback


def _client_worker(port: int, scenario: Scenario, connections: int, seconds: float, first: int, step: int,
                   out: mp.Queue) -> None:  # type: ignore[type-arg]
    """One process: ``connections`` keep-alive clients in threads, each POSTing until the deadline."""
    import threading

    body_of = scenario.body_factory()
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    counts = {"requests": 0, "non_2xx": 0, "errors": 0}
    lock = threading.Lock()

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        n = first + slot
        own: list[float] = []
        requests_, bad, errors = 0, 0, 0
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request("POST", scenario.path, body=body_of(n), headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                continue
            own.append(time.perf_counter() - start)
            requests_ += 1
            bad += response.status >= 400
            n += step
        conn.close()
        with lock:
            latencies.extend(own)
            counts["requests"] += requests_
            counts["non_2xx"] += bad
            counts["errors"] += errors

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    out.put((counts, latencies))


def run_python(port: int, scenario: Scenario, connections: int, seconds: float,
               cpus: set[int] | None, processes: int | None = None) -> LoadResult:
    """The fallback when wrk is missing: several processes of keep-alive clients, bounded in time."""
    processes = max(1, min(connections, processes or (os.cpu_count() or 1) * 2))
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    share = [connections // processes + (i < connections % processes) for i in range(processes)]
    workers = []
    first = 0
    for conns in share:
        proc = ctx.Process(target=_client_worker, args=(port, scenario, conns, seconds, first, connections, out),
                           daemon=True)
        first += conns
        workers.append(proc)
    started = time.perf_counter()
    original = os.sched_getaffinity(0)
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)  # children inherit it
        for proc in workers:
            proc.start()
    finally:
        os.sched_setaffinity(0, original)
    results = [out.get(timeout=seconds + 30) for _ in workers]
    elapsed = time.perf_counter() - started
    for proc in workers:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    latencies = sorted(x for _, lat in results for x in lat)
    total = sum(c["requests"] for c, _ in results)

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return LoadResult("python", min(elapsed, seconds) if total else elapsed, total,
                      sum(c["non_2xx"] for c, _ in results), sum(c["errors"] for c, _ in results),
                      pct(50), pct(99), latencies[-1] * 1000 if latencies else float("nan"))


def run_load(tool: str, port: int, scenario: Scenario, connections: int, seconds: float, workdir: str,
             cpus: set[int] | None, wrk_threads: int = 1) -> LoadResult:
    """Run ``tool`` ("wrk" or "python") for ``seconds`` against ``port``."""
    if tool == "wrk":
        return run_wrk(port, scenario, connections, seconds, workdir, cpus, wrk_threads)
    return run_python(port, scenario, connections, seconds, cpus)


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")
