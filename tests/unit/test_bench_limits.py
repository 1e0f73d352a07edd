"""bench/limits.py: the model's arithmetic, and a quick run of the measurements (figures only, no speed asserted)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.limits import (
    Latency,
    Limits,
    PutCost,
    describe_limits,
    http_cpu_s,
    measure_limits,
    model_for,
    model_rps,
    percentile,
    storage_of,
    storage_serial_rps,
)
from bench.load import LoadResult
from bench.report import RunResult, pair_ratio_table, table
from bench.run import _plan, add_models
from bench.scenarios import SCENARIOS


def test_model_is_the_tighter_of_the_cpu_and_the_commit_bound() -> None:
    # 100 µs of HTTP + 50 µs of storage per request: the core allows 6,667 req/s
    assert model_rps(100e-6, 50e-6, 0.0, 8) == pytest.approx(1 / 150e-6)
    # 8 in flight, each waiting a 2 ms commit besides its 150 µs: 8 / 2.15 ms = 3,721 req/s < 6,667
    assert model_rps(100e-6, 50e-6, 2e-3, 8) == pytest.approx(8 / 2.15e-3)
    # 64 in flight: 64 / 2.15 ms = 29,767, so the core is the limit again
    assert model_rps(100e-6, 50e-6, 2e-3, 64) == pytest.approx(1 / 150e-6)
    # one request in flight: its own CPU plus one commit
    assert model_rps(100e-6, 50e-6, 0.5e-3, 1) == pytest.approx(1 / 650e-6)


def test_storage_alone_serial_model() -> None:
    # c / (commit + c × put CPU): 8 / (0.5 ms + 8 × 50 µs) = 8 / 0.9 ms
    assert storage_serial_rps(50e-6, 0.5e-3, 8) == pytest.approx(8 / 0.9e-3)
    assert storage_serial_rps(50e-6, 0.0, 8) == pytest.approx(1 / 50e-6)  # no fsync: CPU only
    assert storage_serial_rps(0.0, 1e-3, 4) == pytest.approx(4000)  # no CPU: one commit per 4 puts


@pytest.mark.parametrize("args", [(0.0, 0.0, 1e-3, 8), (1e-4, 0.0, -1.0, 8), (1e-4, 0.0, 0.0, 0)])
def test_model_refuses_meaningless_inputs(args: tuple[float, float, float, int]) -> None:
    with pytest.raises(ValueError):
        model_rps(*args)
    with pytest.raises(ValueError):
        storage_serial_rps(0.0, 0.0, 8)


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_system_names_map_to_their_storage() -> None:
    assert storage_of("gateway-sqlite") == "sqlite-power"
    assert storage_of("gateway-sqlite-nometrics") == "sqlite-power"
    assert storage_of("gateway-sqlite-process") == "sqlite-process"
    assert storage_of("gateway-sqlite-process-nometrics") == "sqlite-process"
    assert storage_of("gateway-memory") == "memory"
    assert storage_of("ceiling") is None


def _limits() -> Limits:
    limits = Limits("/tmp/x", Latency(10, 0.3, 0.9, 80.0), Latency(10, 2.0, 4.0, 150.0))
    for storage, cpu in (("sqlite-power", 50.0), ("sqlite-process", 30.0), ("memory", 5.0)):
        for threads in (8, 32):
            limits.put_costs[Limits.key(storage, threads)] = PutCost(storage, threads, 100, cpu, 4.0)
    return limits


def test_model_for_a_run_uses_its_storage_threads_and_ceiling() -> None:
    limits = _limits()
    # a ceiling at 10,000 req/s using 100 % of a core: 100 µs of HTTP per request; at 50 %, 50 µs
    assert http_cpu_s(10_000, 100.0) == pytest.approx(100e-6)
    assert http_cpu_s(10_000, 50.0) == pytest.approx(50e-6)
    assert http_cpu_s(0, 100.0) is None and http_cpu_s(10_000, float("nan")) is None
    # sqlite-power waits the 2 ms commit p50
    assert model_for(limits, "gateway-sqlite", 8, 32, 100e-6) == pytest.approx(8 / 2.15e-3)
    # 64 connections, 32 threads: at most 32 in one commit
    assert model_for(limits, "gateway-sqlite", 64, 32, 100e-6) == pytest.approx(min(1 / 150e-6, 32 / 2.15e-3))
    assert model_for(limits, "gateway-sqlite-process", 8, 32, 100e-6) == pytest.approx(1 / 130e-6)
    assert model_for(limits, "gateway-memory", 8, 32, 100e-6) == pytest.approx(1 / 105e-6)
    assert model_for(limits, "ceiling", 8, 32, 100e-6) is None
    assert model_for(limits, "gateway-sqlite", 8, 32, None) is None
    assert model_for(None, "gateway-sqlite", 8, 32, 100e-6) is None
    assert "sqlite-power" in "\n".join(describe_limits(limits, [8, 64], 32))


def _run(scenario: str, system: str, rps: float, rep: int = 1, connections: int = 8,
         cpu_pct: float = 100.0) -> RunResult:
    load = LoadResult("python", 10.0, int(rps * 10), 0, 0, 1.0, 2.0, 3.0)
    return RunResult(scenario, connections, True, rep, system, load, 1, None, 0.0, cpu_pct, 30.0)


def test_models_and_ratios_land_in_the_table() -> None:
    results = [_run("main", "ceiling", 10_000), _run("main", "gateway-sqlite", 1_860)]
    add_models(results, _limits(), 32)
    assert results[0].model_rps is None
    assert results[1].model_rps == pytest.approx(8 / 2.15e-3)
    row = next(line for line in table(results) if "gateway-sqlite" in line)
    assert "| 3,721 | 50.0% (50%–50%) |" in row  # model req/s, then measured ÷ model
    array = [_run("array", "ceiling", 1_000), _run("array", "gateway-sqlite", 500)]
    array[1].messages_per_request = 100  # the limits time one record per put: no model for 100
    add_models(array, _limits(), 32)
    assert array[1].model_rps is None


def test_device_api_ratio_is_taken_per_repetition_and_system() -> None:
    results = [_run("main", "gateway-sqlite", 2000, 1), _run("devapi", "gateway-sqlite", 1900, 1),
               _run("main", "gateway-sqlite", 1000, 2), _run("devapi", "gateway-sqlite", 800, 2),
               _run("main", "gateway-memory", 4000, 1), _run("devapi", "gateway-memory", 4000, 1)]
    lines = pair_ratio_table(results, "devapi", "main")
    rows = {line.split(" | ")[2]: line for line in lines[2:]}
    assert "| 0.88 (0.80–0.95) | **no** | 2 |" in rows["gateway-sqlite"]
    assert "| 1.00 (1.00–1.00) | yes | 1 |" in rows["gateway-memory"]
    assert pair_ratio_table(results[:1], "devapi", "main") == []


def test_device_api_runs_interleave_with_main() -> None:
    plan = _plan([SCENARIOS["main"], SCENARIOS["devapi"]], [8], [100], [0.0], 2, ["ceiling", "gateway-sqlite"])
    assert [(s.name, rep, system) for s, _, _, rep, system in plan] == [
        (name, rep, system)
        for rep in (1, 2) for name in ("main", "devapi") for system in ("ceiling", "gateway-sqlite")]
    alone = _plan([SCENARIOS["devapi"]], [8], [100], [0.0], 1, ["gateway-sqlite"])
    assert [(s.name, system) for s, *_, system in alone] == [("devapi", "gateway-sqlite")]
    assert SCENARIOS["devapi"].rest_extra()["deviceApi"]["maxConcurrentPolls"] == 1


def test_measurements_run_quickly_with_few_samples(tmp_path: Path) -> None:
    limits = measure_limits([2], 32, fsyncs=5, puts=20, folder=str(tmp_path))
    assert limits.raw_fsync.count == limits.sqlite_commit.count == 5
    assert 0 < limits.raw_fsync.p50_ms <= limits.raw_fsync.p99_ms
    assert 0 < limits.sqlite_commit.p50_ms <= limits.sqlite_commit.p99_ms
    assert set(limits.put_costs) == {"sqlite-power@2", "sqlite-process@2", "memory@2"}
    assert all(cost.puts == 20 and cost.cpu_us > 0 for cost in limits.put_costs.values())
    assert list(tmp_path.iterdir()) == []  # its scratch folder is gone


def test_the_model_charges_each_event_its_drain_when_measured() -> None:
    limits = _limits()
    assert limits.put_cpu_s("sqlite-power", 8) == pytest.approx(50e-6)  # puts only: nothing else measured
    limits.put_costs[Limits.key("sqlite-power", 8)] = PutCost("sqlite-power", 8, 100, 50.0, 4.0, 70.0)
    assert limits.put_cpu_s("sqlite-power", 8) == pytest.approx(70e-6)
    lines = describe_limits(limits, [8], 32)
    assert any(line.startswith("| 8 | sqlite-power | 50.0 | 70.0 | 4.0 |") for line in lines)


def test_the_drained_cost_is_measured_for_every_storage(tmp_path: Path) -> None:
    limits = measure_limits([3], 32, fsyncs=3, puts=30, folder=str(tmp_path))
    for cost in limits.put_costs.values():
        assert cost.drained_cpu_us > 0, cost
