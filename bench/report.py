"""Aggregates benchmark runs into a markdown table and describes the machine they ran on."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from bench.load import LoadResult, median


def _markers(label: str) -> tuple[str, str]:
    return f"<!-- bench:begin {label} -->", f"<!-- bench:end {label} -->"


@dataclass
class RunResult:
    """One system measured once: the load's view, the broker's view and the server's resources."""

    scenario: str
    connections: int
    pin: bool
    rep: int
    system: str
    load: LoadResult
    messages_per_request: int
    delivered: int | None  # telemetry entries counted at the broker (None: the system delivers nothing)
    drain_s: float
    cpu_pct: float  # of one core, during the measured load
    rss_mb: float  # VmHWM of the server process at the end
    model_rps: float | None = None  # bench/limits.py: the limit this run's storage allows (None: not modelled)

    def as_json(self) -> dict[str, object]:
        return {"scenario": self.scenario, "connections": self.connections, "pin": self.pin, "rep": self.rep,
                "system": self.system, "load": asdict(self.load), "rps": self.load.rps,
                "acknowledged": self.load.acknowledged, "expected": self.expected, "delivered": self.delivered,
                "delivery_ratio": self.delivery_ratio, "drain_s": self.drain_s, "cpu_pct": self.cpu_pct,
                "rss_mb": self.rss_mb, "model_rps": self.model_rps}

    @property
    def expected(self) -> int:
        return self.load.acknowledged * self.messages_per_request

    @property
    def delivery_ratio(self) -> float | None:
        if self.delivered is None:
            return None
        return self.delivered / self.expected if self.expected else float("nan")


def machine_description() -> list[str]:
    """nproc, CPU model, memory, OS, Python and the package versions that matter."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    versions = []
    for name in ("flask", "waitress", "werkzeug", "paho-mqtt", "jsonpath-ng"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    tools = []
    for command in (["wrk", "-v"], ["mosquitto", "-h"]):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
            first = (out.stdout or out.stderr).strip().splitlines()
            tools.append(first[0] if first else command[0])
        except (OSError, subprocess.TimeoutExpired):
            tools.append(f"{command[0]}: not installed")
    try:
        load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " at the start"
    except OSError:
        load = ""
    return [
        f"- CPU: {os.cpu_count()} × {model} (nproc {len(os.sched_getaffinity(0))}); memory {mem}",
        f"- OS: {platform.platform()}; {load}",
        f"- Python {sys.version.split()[0]} ({platform.python_implementation()}); {', '.join(versions)}",
        f"- Tools: {'; '.join(tools)}",
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:,.{digits}f}"


def table(results: list[RunResult]) -> list[str]:
    """One row per (scenario, connections, pinning, system): medians over repetitions."""
    header = ("| scenario | conns | pinned | system | req/s (median; rpc: RPCs/s) | msgs/s | p50 ms | p99 ms | "
              "delivered/acked (worst) | drain s | non-2xx (rpc: error replies) | socket err (rpc: no reply) | "
              "CPU % | peak RSS MB | "
              "÷ ceiling (median, min–max) | model req/s (median) | ÷ model (median, min–max) | reps |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    groups: dict[tuple[str, int, bool, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.connections, r.pin, r.system), []).append(r)
    for (scenario, conns, pin, system), runs in groups.items():
        ceilings = {r.rep: r.load.rps for r in results if r.scenario == scenario and r.connections == conns
                    and r.pin == pin and r.system == "ceiling"}
        ratios = [r.load.rps / ceilings[r.rep] for r in runs if ceilings.get(r.rep)]
        rps = median([r.load.rps for r in runs])
        deliveries = [r.delivery_ratio for r in runs if r.delivery_ratio is not None]
        worst = min(deliveries) if deliveries else None
        ratio = "—" if system == "ceiling" or not ratios else (
            f"{median(ratios):.1%} ({min(ratios):.0%}–{max(ratios):.0%})")
        models = [r.model_rps for r in runs if r.model_rps]
        of_model = [r.load.rps / r.model_rps for r in runs if r.model_rps]
        model_ratio = f"{median(of_model):.1%} ({min(of_model):.0%}–{max(of_model):.0%})" if of_model else "—"
        lines.append(
            f"| {scenario} | {conns} | {'yes' if pin else 'no'} | {system} | {_fmt(rps)} | "
            f"{_fmt(rps * runs[0].messages_per_request)} | {_fmt(median([r.load.p50_ms for r in runs]), 2)} | "
            f"{_fmt(median([r.load.p99_ms for r in runs]), 2)} | {_fmt(worst, 4)} | "
            f"{_fmt(max(r.drain_s for r in runs), 1) if system != 'ceiling' else '—'} | "
            f"{sum(r.load.non_2xx for r in runs)} | {sum(r.load.socket_errors for r in runs)} | "
            f"{_fmt(median([r.cpu_pct for r in runs]))} | {_fmt(max(r.rss_mb for r in runs), 1)} | "
            f"{ratio} | {_fmt(median(models)) if models else '—'} | {model_ratio} | {len(runs)} |"
        )
    return lines


#: the issue's bar for an unpinned run: at least this share of the pinned figure
UNPINNED_BAR = 0.70


def pin_ratio_table(results: list[RunResult]) -> list[str]:
    """Unpinned ÷ pinned req/s (medians) per scenario × connections × system; empty unless both were run."""
    groups: dict[tuple[str, int, str], dict[bool, list[float]]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.connections, r.system), {}).setdefault(r.pin, []).append(r.load.rps)
    lines = ["| scenario | conns | system | pinned req/s (median) | unpinned req/s (median) | unpinned ÷ pinned | "
             f"≥ {UNPINNED_BAR:.0%} |", "|---|---|---|---|---|---|---|"]
    for (scenario, conns, system), by_pin in groups.items():
        if True not in by_pin or False not in by_pin:
            continue
        pinned_rps, unpinned_rps = median(by_pin[True]), median(by_pin[False])
        ratio = unpinned_rps / pinned_rps if pinned_rps else float("nan")
        verdict = "—" if ratio != ratio else ("yes" if ratio >= UNPINNED_BAR else "**no**")
        lines.append(f"| {scenario} | {conns} | {system} | {_fmt(pinned_rps)} | {_fmt(unpinned_rps)} | "
                     f"{'—' if ratio != ratio else f'{ratio:.1%}'} | {verdict} |")
    return lines if len(lines) > 2 else []


def pair_ratio_table(results: list[RunResult], scenario: str, base: str, bar: float = 0.9) -> list[str]:
    """``scenario`` req/s ÷ ``base`` req/s of the same system, connections, pinning and repetition
    (devapi ÷ main: the device API's telemetry against the mapping endpoint on the same storage);
    empty unless both were run."""
    rates = {(r.scenario, r.connections, r.pin, r.system, r.rep): r.load.rps for r in results}
    groups: dict[tuple[int, bool, str], list[float]] = {}
    for (name, conns, pin, system, rep), rps in rates.items():
        other = rates.get((base, conns, pin, system, rep))
        if name == scenario and other:
            groups.setdefault((conns, pin, system), []).append(rps / other)
    lines = [f"| conns | pinned | system | {scenario} ÷ {base} (median, min–max; per repetition) | ≥ {bar:g} | reps |",
             "|---|---|---|---|---|---|"]
    for (conns, pin, system), ratios in groups.items():
        verdict = "yes" if median(ratios) >= bar else "**no**"
        lines.append(f"| {conns} | {'yes' if pin else 'no'} | {system} | {median(ratios):.2f} "
                     f"({min(ratios):.2f}–{max(ratios):.2f}) | {verdict} | {len(ratios)} |")
    return lines if len(lines) > 2 else []


def per_run_lines(results: list[RunResult]) -> list[str]:
    """Every single run, in the order it ran (to see drift and noise)."""
    lines = ["| # | scenario | conns | pinned | rep | system | req/s | p99 ms | delivered | acked×msgs | CPU % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | {r.scenario} | {r.connections} | {'yes' if r.pin else 'no'} | {r.rep} | "
                     f"{r.system} | {_fmt(r.load.rps)} | {_fmt(r.load.p99_ms, 2)} | "
                     f"{'—' if r.delivered is None else r.delivered} | {r.expected} | {_fmt(r.cpu_pct)} |")
    return lines


def results_section(command: str, machine: list[str], results: list[RunResult], notes: list[str],
                    label: str = "run", limit_lines: list[str] | None = None) -> str:
    """The generated part of RESULTS.md (between the bench markers named ``label``)."""
    begin, end = _markers(label)
    pin_lines = pin_ratio_table(results)
    pin_part = ["Unpinned ÷ pinned (the issue asks for ≥ 70 % at 64 connections):", "", *pin_lines, ""] \
        if pin_lines else []
    pair_lines = pair_ratio_table(results, "devapi", "main")
    pair_part = ["Device API ÷ mapping endpoint, same system (the issue asks for ≥ 0.9):", "", *pair_lines, ""] \
        if pair_lines else []
    limit_part = [*limit_lines, ""] if limit_lines else []
    parts = [begin, f"## Generated: {label}", "", "Command:", "", "```", command, "```", "", "Machine:", "",
             *machine, "", *notes, "", *table(results), "", *pin_part, *pair_part, *limit_part,
             "<details><summary>Every run in order</summary>", "",
             *per_run_lines(results), "", "</details>", end]
    return "\n".join(parts) + "\n"


def write_results(path: str, section: str, label: str = "run") -> None:
    """Replace the generated section ``label`` of ``path`` (or append it), keeping everything else."""
    begin, end = _markers(label)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = "# Benchmark results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
