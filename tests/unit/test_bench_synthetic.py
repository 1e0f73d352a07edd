"""bench/synthetic.py: the synthetic limit runs the real storages, picks its cases from the runs, and
lands in its table (figures only, no speed asserted)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from bench.load import LoadResult
from bench.report import RunResult
from bench.synthetic import Synthetic, measure_synthetic, synthetic_rps, synthetic_table
from gateway.storage.base import StorageFull
from gateway.storage.memory import MemoryStorage


def _run(system: str, rps: float, rep: int = 1, connections: int = 8, cpu_pct: float = 100.0,
         pin: bool = True) -> RunResult:
    load = LoadResult("python", 10.0, int(rps * 10), 0, 0, 1.0, 2.0, 3.0)
    return RunResult("main", connections, pin, rep, system, load, 1, None, 0.0, cpu_pct, 30.0)


@pytest.mark.parametrize("kind", ["sqlite-power", "sqlite-process", "memory"])
def test_each_storage_is_put_into_and_drained_while_the_http_work_is_spent(kind: str, tmp_path: Path) -> None:
    synth = synthetic_rps(kind, 200e-6, 2, 0.3, warmup=0.1, folder=str(tmp_path))
    assert synth.storage == kind and synth.threads == 2 and synth.http_cpu_us == pytest.approx(200)
    assert synth.rps > 0 and synth.busy > 0
    # the HTTP work holds the GIL, as request code does: at most one thread spends it at a time
    assert synth.rps * 200e-6 <= 1.05
    if kind == "memory":
        assert math.isnan(synth.puts_per_commit)
    else:
        assert 1 <= synth.puts_per_commit <= 2  # a group commit carries at most the two threads' puts
    assert list(tmp_path.iterdir()) == []  # its scratch folder and the SQLite file are gone


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        synthetic_rps("memory", 1e-4, 0, 1.0)
    with pytest.raises(ValueError):
        synthetic_rps("memory", 1e-4, 1, 0.0)


def test_cases_come_from_pinned_runs_with_a_ceiling_and_use_its_median_cpu() -> None:
    results = [_run("ceiling", 2_000, rep=1), _run("ceiling", 4_000, rep=2, cpu_pct=80.0),  # 500 and 200 µs
               _run("ceiling", 5_000, rep=3),  # 200 µs: the median of the three is 200 µs
               _run("gateway-sqlite", 1_500), _run("gateway-memory", 1_900),
               _run("gateway-sqlite", 1_000, connections=64),  # no ceiling at 64 connections: no case
               _run("ceiling", 2_000, pin=False), _run("gateway-sqlite-process", 900, pin=False)]  # unpinned
    measured = measure_synthetic(results, {"sqlite-power": 32, "sqlite-process": 32, "memory": 4}, 0.2)
    assert set(measured) == {("main", 8, "sqlite-power"), ("main", 8, "memory")}
    assert measured[("main", 8, "sqlite-power")].threads == 8
    assert measured[("main", 8, "memory")].threads == 4  # fewer threads than connections: the threads
    assert all(s.http_cpu_us == pytest.approx(200) for s in measured.values())


def test_the_table_sets_each_limit_beside_the_ceiling_and_the_gateway() -> None:
    results = [_run("ceiling", 2_500, rep=1), _run("ceiling", 2_400, rep=2),
               _run("gateway-sqlite", 1_620, rep=1), _run("gateway-sqlite", 1_700, rep=2),
               _run("gateway-sqlite-metrics", 1_500, rep=1)]
    synth = Synthetic("sqlite-power", 8, 400.0, 1_800.0, 0.9, 4.5)
    lines = synthetic_table(results, {("main", 8, "sqlite-power"): synth})
    rows = [line for line in lines if line.startswith("| main |")]
    assert rows[0] == "| main | 8 | gateway-sqlite | 8 | 400 | 1,800 | 73.5% | 90% | 4.5 | 1,660 | 92.2% |"
    assert rows[1].startswith("| main | 8 | gateway-sqlite-metrics | 8 |") and rows[1].endswith("| 1,500 | 83.3% |")
    memory = dataclasses.replace(synth, storage="memory", puts_per_commit=float("nan"))
    assert "| — |" in synthetic_table([_run("gateway-memory", 10)], {("main", 8, "memory"): memory})[-1]
    assert synthetic_table(results, {}) == []


def test_a_failing_request_thread_fails_the_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: MemoryStorage, payloads: object, *args: object) -> None:
        raise StorageFull("full")

    monkeypatch.setattr(MemoryStorage, "put", refuse)
    with pytest.raises(RuntimeError, match="synthetic request thread failed on the memory storage"):
        synthetic_rps("memory", 10e-6, 2, 0.2, warmup=0.05, folder=str(tmp_path))
