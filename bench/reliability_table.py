"""Runs the fault and fuzz tests once and writes their figures to docs/reliability.md (a generated table)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fault tests whose figures go into the table, with the fault each one injects.
FAULTS: dict[str, str] = {
    "test_broker_down_10s_while_4_clients_post": "Broker stopped 10 s while 4 clients post, then restarted",
    "test_broker_restarted_every_2s_5_times_under_load": "Broker restarted every 2 s, 5 times, under load",
    "test_sigkill_under_load_then_restart": "Daemon killed with SIGKILL under load, started again on the same storage",
    "test_sigkill_with_everything_still_queued":
        "Daemon killed with SIGKILL with all acknowledged data still queued, then restarted",
    "test_wrong_credentials_are_reported_once_data_is_kept_and_delivered_after_the_fix":
        "ThingsBoard refuses the credentials; fixed, then restarted",
    "test_full_storage_answers_503_and_recovers": "Storage full (small limit): 503 + Retry-After, then drained",
    "test_unwritable_storage_refuses_to_start_with_a_clear_error": "Database unwritable at start: exit 1, clear error",
    "test_disk_error_at_run_time_answers_503_and_the_daemon_lives_on":
        "Disk full at run time (file size limit): 503 + Retry-After, clear log, no crash",
    "test_two_hundred_slow_clients_do_not_starve_normal_ones": "200 slowloris connections (1 byte/s)",
    "test_slow_heads_are_dropped_so_a_full_connection_table_frees_up": "Slow clients fill the connection limit",
}
# Downlink (attribute update / RPC) target faults: their own table, counted in RPCs and replies.
# A key with ``[param]`` names one parametrized case; a bare name covers every case.
DOWNLINK_FAULTS: dict[str, str] = {
    "test_target_timeout_replies_408": "Target hangs (read timeout)",
    "test_target_500_replies_error": "Target answers 500",
    "test_slow_target_for_device_a_does_not_delay_device_b": "One slow target, others go on",
    "test_faulty_target_gets_clean_error_replies_and_others_go_on[reset]":
        "Target resets the connection at once (RST before any byte)",
    "test_faulty_target_gets_clean_error_replies_and_others_go_on[reset_mid]":
        "Target resets the connection mid-answer (status line, then RST)",
    "test_faulty_target_gets_clean_error_replies_and_others_go_on[garbage]": "Target answers non-HTTP garbage",
    "test_faulty_target_gets_clean_error_replies_and_others_go_on[truncated]":
        "Target answers a truncated body (Content-Length 100, 10 bytes sent)",
    "test_faulty_target_gets_clean_error_replies_and_others_go_on[endless_headers]":
        "Target sends header lines without end",
    "test_dripping_target_is_cut_at_the_response_timeout":
        "Target trickles header lines just inside the read timeout (cut at responseTimeout)",
    "test_https_target_answers_within_the_response_timeout": "Good HTTPS target (deadline watchdog on TLS)",
    "test_good_device_still_answers_after_every_fault": "Every faulty target once more, then a good one",
}
# Faults the issue lists that no test injects yet: shown as such, never silently left out.
PENDING: list[str] = []
FAULT_TESTS = ["tests/e2e/test_durability.py", "tests/e2e/test_credentials.py", "tests/e2e/test_https_and_limits.py",
               "tests/e2e/test_downlink.py", "tests/e2e/test_downlink_faults.py", "tests/e2e/test_slow_clients.py"]
FUZZ_TESTS = ["tests/fuzz"]

_NODE = re.compile(r"^(tests/\S+?\.py::[^\s]+)")
_RESULT = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_COUNTS = re.compile(r"(?:sent/)?acknowledged=(\d+)\s+delivered=(\d+)\s+duplicates=(\d+)")
_DOWNLINK = re.compile(r"downlink: relayed=(\d+)\s+replied=(\d+)\s+errors=(\d+)")


@dataclass
class FaultRun:
    """One fault test as seen in the pytest output."""

    node: str
    result: str = "?"
    counts: list[tuple[int, int, int]] = field(default_factory=list)  # (acknowledged, delivered, duplicates)
    downlink: list[tuple[int, int, int]] = field(default_factory=list)  # (relayed, replied, errors)
    notes: list[str] = field(default_factory=list)


def parse_fault_output(text: str) -> list[FaultRun]:
    """Test ids, results and printed ``acknowledged= delivered= duplicates=`` and
    ``downlink: relayed= replied= errors=`` lines of a ``-s -v`` run."""
    runs: list[FaultRun] = []
    current: FaultRun | None = None
    for line in text.splitlines():
        node = _NODE.match(line)
        if node:
            current = FaultRun(node.group(1))
            runs.append(current)
            line = line[node.end():]
        if current is None:
            continue
        for match in _COUNTS.finditer(line):
            current.counts.append(tuple(int(g) for g in match.groups()))  # type: ignore[arg-type]
        for match in _DOWNLINK.finditer(line):
            current.downlink.append(tuple(int(g) for g in match.groups()))  # type: ignore[arg-type]
        if line.strip().startswith("slow clients:"):
            current.notes.append(line.strip()[len("slow clients:"):].strip())
        result = _RESULT.search(line)
        if result and current.result == "?":
            current.result = result.group(1)
    return runs


def run_pytest(paths: list[str], figures: str, soak: bool, extra: list[str]) -> tuple[int, str]:
    env = dict(os.environ, RGW_FIGURES_FILE=figures, PYTHONPATH=ROOT)
    if soak:
        env["RGW_SOAK"] = "1"
    command = [sys.executable, "-m", "pytest", "-s", "-v", "-p", "no:cacheprovider", "-p", "no:warnings",
               *extra, *paths]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def _described(name: str, table: dict[str, str]) -> str | None:
    """The fault a test id injects: its exact entry (parametrized case) or its function's."""
    return table.get(name, table.get(name.split("[", 1)[0]))


def _rows(runs: list[FaultRun], described: dict[str, str], figures: Callable[[FaultRun], str | None]
          ) -> list[str]:
    """One table row per run whose test is in ``described``; dashes where the run printed no counts."""
    lines = []
    for run in runs:
        name = run.node.split("::", 1)[1]
        fault = _described(name, described)
        if fault is None:
            continue
        if run.notes:
            fault += f" ({'; '.join(run.notes)})"
        lines.append(f"| {fault} | `{name}` | {run.result} | {figures(run) or '– | – | – | –'} |")
    return lines


def _delivery_figures(run: FaultRun) -> str | None:
    if not run.counts:
        return None
    acked, delivered, duplicates = (sum(c[i] for c in run.counts) for i in range(3))
    # the tests assert delivered ⊇ acknowledged, so a PASSED run lost nothing
    lost = "0" if run.result == "PASSED" else "see test output"
    return f"{acked} | {delivered} | {lost} | {duplicates}"


def _downlink_figures(run: FaultRun) -> str | None:
    if not run.downlink:
        return None
    relayed, replied, errors = (sum(c[i] for c in run.downlink) for i in range(3))
    # the tests assert replied == relayed, so a PASSED run left no RPC unanswered
    unanswered = str(relayed - replied) if run.result == "PASSED" else "see test output"
    return f"{relayed} | {replied} | {errors} | {unanswered}"


def fault_table(runs: list[FaultRun]) -> list[str]:
    return (["| Fault | Test | Result | Acknowledged (200) | Delivered | Lost | Duplicated |",
             "|---|---|---|---:|---:|---:|---:|"]
            + _rows(runs, FAULTS, _delivery_figures)
            + [f"| {fault} | no test yet | – | – | – | – | – |" for fault in PENDING])


def downlink_table(runs: list[FaultRun]) -> list[str]:
    return (["| Fault | Test | Result | RPCs relayed | Replies | Error replies | Unanswered |",
             "|---|---|---|---:|---:|---:|---:|"]
            + _rows(runs, DOWNLINK_FAULTS, _downlink_figures))


def fuzz_table(figures_file: str) -> list[str]:
    merged: dict[str, dict[str, int]] = {}
    if os.path.exists(figures_file):
        with open(figures_file, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                if record.get("kind") != "fuzz":
                    continue
                target = merged.setdefault(record["target"], {})
                for outcome, count in record["outcomes"].items():
                    target[outcome] = target.get(outcome, 0) + count
    lines = ["| Target | Cases | Outcomes |", "|---|---:|---|"]
    for target, outcomes in merged.items():
        total = sum(outcomes.values())
        ordered = sorted(outcomes.items(), key=lambda kv: (not kv[0].isdigit(), kv[0]))
        text = ", ".join(f"{k}: {v}" for k, v in ordered)
        lines.append(f"| {target} | {total} | {text} |")
    return lines


def commit_id() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def render(fault_runs: list[FaultRun], fault_rc: int, fuzz_rc: int, figures_file: str, soak: bool,
           seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "soak (RGW_SOAK=1)" if soak else "CI settings"
    status = ("all passed" if fault_rc == 0 and fuzz_rc == 0
              else f"FAILURES (fault tests rc={fault_rc}, fuzz rc={fuzz_rc})")
    out = [
        "# Reliability figures",
        "",
        "Generated by `python bench/reliability_table.py` from one real run of the fault and fuzz tests"
        f" — do not edit by hand. Run: {when}, commit `{commit_id()}`, {os.cpu_count()} CPUs, {mode},"
        f" {seconds:.0f} s, {status}.",
        "",
        "## Faults",
        "",
        "Every fault test runs the daemon as a real process against a real broker, with a real",
        "subscriber counting what ThingsBoard would receive. *Acknowledged* is the number of requests",
        "answered 200; *delivered* the distinct messages the subscriber saw; *lost* = acknowledged but",
        "never delivered (each test fails unless it is 0); *duplicated* = deliveries beyond the first",
        "(at-least-once allows them, within the window of unacknowledged publishes). Dashes: the test",
        "asserts the behaviour (its result is shown) but prints no counts.",
        "",
        *fault_table(fault_runs),
        "",
        "## Downlink targets",
        "",
        "Attribute updates and server-side RPCs relayed to HTTP targets that misbehave. *RPCs relayed*",
        "is the number of RPCs ThingsBoard published (to the faulty target and, interleaved, to a good",
        "target for another device); *replies* the replies it got on `v1/gateway/rpc`; *error replies*",
        "those with `{\"error\", \"code\"}` (docs/downlink.md lists them); *unanswered* must be 0 (each test",
        "fails otherwise). Each test also checks that later attribute updates of the device still go out,",
        "the good target's device is answered throughout, and the daemon stays up. Dashes: the test",
        "asserts the behaviour but prints no counts.",
        "",
        *downlink_table(fault_runs),
        "",
        "## Bad input (fuzzing)",
        "",
        "Cases tried per target and the outcomes seen (HTTP status; `closed` = an incomplete request",
        "closed without an answer, which is only allowed for requests that never finished). No case",
        "may give a 500, kill the daemon, or answer without a JSON `{\"error\", \"status\"}` body.",
        "",
        *fuzz_table(figures_file),
        "",
        "Coverage-guided fuzzing (optional, by hand): atheris 3.0 installs with `pip install atheris` from",
        "its manylinux wheel for CPython 3.11 (libFuzzer included, no clang needed), but it is not a",
        "dependency and this script does not run it. `tests/fuzz/atheris_http.py` feeds libFuzzer's bytes",
        "to `parse_json`, `read_request` and the connector's Flask app and fails on any exception other",
        "than a documented 400 or any undocumented answer; its docstring says how to run it.",
        "",
        "Reproduce: `python bench/reliability_table.py` (CI-sized, a few minutes) or",
        "`python bench/reliability_table.py --soak` (20x the fuzz cases).",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "reliability.md"))
    parser.add_argument("--soak", action="store_true", help="longer runs (sets RGW_SOAK=1)")
    parser.add_argument("--pytest-arg", action="append", default=[], help="extra argument for pytest")
    args = parser.parse_args(argv)
    start = datetime.datetime.now()
    with tempfile.TemporaryDirectory(prefix="rgw-figures-") as folder:
        figures = os.path.join(folder, "figures.jsonl")
        fault_rc, fault_text = run_pytest(FAULT_TESTS, figures, args.soak, args.pytest_arg)
        fuzz_rc, fuzz_text = run_pytest(FUZZ_TESTS, figures, args.soak, args.pytest_arg)
        seconds = (datetime.datetime.now() - start).total_seconds()
        text = render(parse_fault_output(fault_text), fault_rc, fuzz_rc, figures, args.soak, seconds)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    if fault_rc or fuzz_rc:
        print(fault_text[-4000:] if fault_rc else fuzz_text[-4000:], file=sys.stderr)
    return 1 if fault_rc or fuzz_rc else 0


if __name__ == "__main__":
    sys.exit(main())
