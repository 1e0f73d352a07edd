"""The benchmark's report tables: the unpinned ÷ pinned ratio is read off per scenario, connections and system."""
from __future__ import annotations

from bench.load import LoadResult
from bench.report import RunResult, pin_ratio_table, results_section


def run(system: str, pin: bool, rps: float, rep: int = 1, connections: int = 64) -> RunResult:
    load = LoadResult("python", 10.0, int(rps * 10), 0, 0, 1.0, 2.0, 3.0)
    return RunResult("main", connections, pin, rep, system, load, 1, None, 0.0, 50.0, 30.0)


def test_unpinned_over_pinned_uses_medians_and_flags_a_collapse() -> None:
    results = [run("gateway-sqlite", True, 1000, 1), run("gateway-sqlite", True, 1200, 2),
               run("gateway-sqlite", True, 5000, 3), run("gateway-sqlite", False, 900, 1),
               run("gateway-sqlite", False, 300, 2), run("gateway-sqlite", False, 1000, 3),
               run("ceiling", True, 2000), run("ceiling", False, 1000)]
    lines = pin_ratio_table(results)
    rows = {line.split(" | ")[2]: line for line in lines[2:]}
    assert set(rows) == {"gateway-sqlite", "ceiling"}
    assert "| 1,200 | 900 | 75.0% | yes |" in rows["gateway-sqlite"]  # medians 1,200 pinned, 900 unpinned
    assert "| 2,000 | 1,000 | 50.0% | **no** |" in rows["ceiling"]


def test_no_ratio_table_without_both_pinnings() -> None:
    results = [run("gateway-sqlite", True, 1000), run("ceiling", True, 2000)]
    assert pin_ratio_table(results) == []
    assert "Unpinned" not in results_section("cmd", ["machine"], results, ["note"])


def test_results_section_carries_the_ratio_table_with_both_pinnings() -> None:
    results = [run("gateway-sqlite", True, 1000), run("gateway-sqlite", False, 800)]
    section = results_section("cmd", ["machine"], results, ["note"], label="x")
    assert "| main | 64 | gateway-sqlite | 1,000 | 800 | 80.0% | yes |" in section
