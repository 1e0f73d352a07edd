"""The figures pipeline: fuzz outcome files and printed fault counts become the docs/reliability.md tables."""
from __future__ import annotations

import json

from bench.reliability_table import downlink_table, fault_table, fuzz_table, parse_fault_output
from tests.fuzz import support

PYTEST_OUTPUT = """\
tests/e2e/test_durability.py::test_broker_down_10s_while_4_clients_post sent/acknowledged=245 delivered=245 duplicates=3
PASSED
tests/e2e/test_durability.py::test_sigkill_under_load_then_restart sent/acknowledged=50 delivered=50 duplicates=0
FAILED
tests/e2e/test_slow_clients.py::test_two_hundred_slow_clients_do_not_starve_normal_ones slow clients: 200 connections
PASSED
tests/e2e/test_https_and_limits.py::test_full_storage_answers_503_and_recovers[sqlite] PASSED
"""


def test_printed_counts_are_parsed_per_test() -> None:
    runs = parse_fault_output(PYTEST_OUTPUT)
    assert [(r.node.split("::")[1], r.result, r.counts) for r in runs] == [
        ("test_broker_down_10s_while_4_clients_post", "PASSED", [(245, 245, 3)]),
        ("test_sigkill_under_load_then_restart", "FAILED", [(50, 50, 0)]),
        ("test_two_hundred_slow_clients_do_not_starve_normal_ones", "PASSED", []),
        ("test_full_storage_answers_503_and_recovers[sqlite]", "PASSED", []),
    ]
    rows = fault_table(runs)[2:]
    assert rows[0].endswith("| PASSED | 245 | 245 | 0 | 3 |")
    assert rows[1].endswith("| FAILED | 50 | 50 | see test output | 0 |")  # lost is only claimed for a pass
    assert "200 connections" in rows[2] and rows[3].endswith("| PASSED | – | – | – | – |")


DOWNLINK_OUTPUT = """\
tests/e2e/test_downlink_faults.py::test_faulty_target_gets_clean_error_replies_and_others_go_on[garbage] \
downlink: relayed=6 replied=6 errors=3
PASSED
tests/e2e/test_downlink_faults.py::test_good_device_still_answers_after_every_fault downlink: relayed=7 replied=6 \
errors=5
FAILED
tests/e2e/test_downlink.py::test_target_500_replies_error PASSED
tests/e2e/test_downlink.py::test_spec_echo_rpc_with_reply PASSED
"""


def test_downlink_counts_get_their_own_table() -> None:
    runs = parse_fault_output(DOWNLINK_OUTPUT)
    assert [(r.result, r.downlink, r.counts) for r in runs] == [
        ("PASSED", [(6, 6, 3)], []), ("FAILED", [(7, 6, 5)], []), ("PASSED", [], []), ("PASSED", [], [])]
    rows = downlink_table(runs)[2:]
    assert len(rows) == 3  # the echo test injects no fault: not a row
    assert rows[0].startswith("| Target answers non-HTTP garbage | `test_faulty_target_gets_clean_error_replies")
    assert rows[0].endswith("| PASSED | 6 | 6 | 3 | 0 |")
    assert rows[1].endswith("| FAILED | 7 | 6 | 5 | see test output |")  # unanswered is only claimed for a pass
    assert rows[2].startswith("| Target answers 500 |") and rows[2].endswith("| PASSED | – | – | – | – |")
    assert fault_table(runs)[2:] == []  # downlink faults stay out of the acknowledged/delivered table


def test_outcomes_are_appended_and_merged(tmp_path, monkeypatch) -> None:
    figures = tmp_path / "figures.jsonl"
    monkeypatch.setattr(support, "FIGURES_FILE", str(figures))
    for statuses in ([200, 400, 400], [400, "closed"]):
        outcomes = support.Outcomes("target A")
        for status in statuses:
            outcomes.add(status)
        outcomes.write()
    assert [json.loads(line)["outcomes"] for line in figures.read_text().splitlines()] == [
        {"200": 1, "400": 2}, {"400": 1, "closed": 1}]
    assert fuzz_table(str(figures))[2:] == ["| target A | 5 | 200: 1, 400: 3, closed: 1 |"]
