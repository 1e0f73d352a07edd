"""reportStrategy decisions (connectors/rest/report_strategy.py) on converted data, with a settable clock."""
from __future__ import annotations

import threading

from connectors.rest.report_strategy import ReportFilter, Strategy, inherited_strategy, mapping_strategies
from converters.model import ConvertedData, TelemetryEntry


def message(device: str = "D", **values: object) -> ConvertedData:
    return ConvertedData(device, attributes={"fw": "1"}, telemetry=[TelemetryEntry(1, dict(values))])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sent(report: ReportFilter, item: ConvertedData, commit: bool = True) -> tuple[dict, dict]:
    updates = report.apply([item])
    if commit:
        report.commit(updates)
    return item.attributes, item.telemetry[0].values


def test_key_level_wins_over_the_mapping_and_on_change_compares_type_and_value() -> None:
    converter = {"attributes": [{"key": "fw", "value": "${fw}"}],
                 "timeseries": [{"key": "t", "value": "${t}", "reportStrategy": {"type": "ON_RECEIVED"}},
                                {"key": "off", "value": "${off}", "reportStrategy": {"type": "DISABLED"}}]}
    strategies = mapping_strategies({"type": "ON_CHANGE"}, converter)
    assert strategies.default == Strategy("ON_CHANGE") and not strategies.trivial
    report = ReportFilter(strategies)
    assert sent(report, message(t=1, h=1, off=5)) == ({"fw": "1"}, {"t": 1, "h": 1})
    assert sent(report, message(t=1, h=1, off=5)) == ({}, {"t": 1})  # fw, h unchanged; t always; off never
    assert sent(report, message(t=1, h=1.0)) == ({}, {"t": 1, "h": 1.0})  # 1.0 is not 1
    assert sent(report, message("E", t=1, h=1.0)) == ({"fw": "1"}, {"t": 1, "h": 1.0})  # per device
    assert sent(report, message(h={"a": [1]})) == ({}, {"h": {"a": [1]}})
    assert sent(report, message(h={"a": [1]})) == ({}, {})


def test_periods_and_state_only_counts_what_was_stored() -> None:
    clock = Clock()
    report = ReportFilter(mapping_strategies(None, {"reportStrategy": {"type": "ON_REPORT_PERIOD",
                                                                      "reportPeriod": 1000}}), clock=clock)
    assert sent(report, message(t=1)) == ({"fw": "1"}, {"t": 1})
    clock.now += 0.5
    assert sent(report, message(t=2)) == ({}, {})  # within the period, even though it changed
    clock.now += 0.5
    assert sent(report, message(t=2)) == ({"fw": "1"}, {"t": 2})
    both = ReportFilter(mapping_strategies({"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 1000}, {}),
                        clock=clock)
    assert sent(both, message(t=1)) == ({"fw": "1"}, {"t": 1})
    assert sent(both, message(t=2)) == ({}, {"t": 2})  # changed: at once
    clock.now += 0.9
    assert sent(both, message(t=2)) == ({}, {})
    clock.now += 0.1
    assert sent(both, message(t=2)) == ({"fw": "1"}, {"t": 2})  # unchanged, but the period passed
    # values whose storage failed (no commit) are not counted as sent
    change = ReportFilter(mapping_strategies({"type": "ON_CHANGE"}, {}))
    assert sent(change, message(t=1), commit=False) == ({"fw": "1"}, {"t": 1})
    assert sent(change, message(t=1)) == ({"fw": "1"}, {"t": 1})


def test_state_is_bounded_and_a_forgotten_key_is_sent_again() -> None:
    report = ReportFilter(mapping_strategies({"type": "ON_CHANGE"}, {}), max_keys=4)  # 2 keys a device
    for device in ("A", "B", "C"):
        sent(report, message(device, t=1))
    assert report.stats()["tracked_keys"] == 4 and report.stats()["forgotten"] == 2
    assert sent(report, message("A", t=1)) == ({"fw": "1"}, {"t": 1})  # A was forgotten: sent, not lost
    assert sent(report, message("C", t=1)) == ({}, {})  # B was forgotten now, C is still known


def test_precedence_key_over_mapping_over_converter_over_connector_over_gateway() -> None:
    inherited = inherited_strategy({"type": "ON_CHANGE"}, {"type": "DISABLED"})
    assert inherited == Strategy("ON_CHANGE")
    assert inherited_strategy(None, {"type": "DISABLED", "reportPeriod": 5}) == Strategy("DISABLED", 5)
    assert inherited_strategy(None, None) is None
    converter = {"reportStrategy": {"type": "ON_REPORT_PERIOD"},
                 "timeseries": [{"key": "k", "reportStrategy": {"type": "ON_RECEIVED"}}]}
    assert mapping_strategies(None, {}, inherited).default == Strategy("ON_CHANGE")
    assert mapping_strategies(None, converter, inherited).default == Strategy("ON_REPORT_PERIOD")
    both = mapping_strategies({"type": "DISABLED", "aggregationFunction": "SUM"}, converter, inherited)
    assert both.default == Strategy("DISABLED") and both.timeseries == {"k": Strategy("ON_RECEIVED")}


def test_state_handed_to_storage_and_loaded_again_decides_as_before() -> None:
    clock = Clock()
    strategies = mapping_strategies(None, {"timeseries": [
        {"key": "p", "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 1000}}]},
        Strategy("ON_CHANGE"))
    first = ReportFilter(strategies, clock=clock, scope="rest/r")
    item = message(t=1.0, o={"b": 1, "a": [True]}, p=1)
    updates = first.apply([item])
    marks = first.marks(updates)
    assert {(m.scope, m.device, m.kind, m.key, m.sent_at) for m in marks} == {
        ("rest/r", "D", "attributes", "fw", 100.0), ("rest/r", "D", "timeseries", "t", 100.0),
        ("rest/r", "D", "timeseries", "o", 100.0), ("rest/r", "D", "timeseries", "p", 100.0)}
    again = ReportFilter(strategies, clock=clock, scope="rest/r")  # a restart: only what was stored
    again.load(marks)
    clock.now += 0.5
    assert sent(again, message(t=1.0, o={"a": [True], "b": 1}, p=2)) == ({}, {})  # same, key order aside
    assert sent(again, message(t=1, o={"a": [True], "b": 1}, p=2)) == ({}, {"t": 1})  # 1 is not 1.0
    clock.now += 0.5
    assert sent(again, message(p=3)) == ({}, {"p": 3})  # the period went on from the stored send time
    assert again.stats()["loaded"] == 4


def test_a_clock_set_back_makes_a_period_due_instead_of_silent() -> None:
    clock = Clock()
    report = ReportFilter(mapping_strategies({"type": "ON_REPORT_PERIOD", "reportPeriod": 60000}, {}), clock=clock)
    assert sent(report, message(t=1)) == ({"fw": "1"}, {"t": 1})
    clock.now -= 3600
    assert sent(report, message(t=2)) == ({"fw": "1"}, {"t": 2})


def test_requests_of_one_device_are_decided_and_stored_in_turn() -> None:
    report = ReportFilter(mapping_strategies({"type": "ON_CHANGE"}, {}))
    inside = threading.Event()
    release = threading.Event()
    results: list[dict] = []

    def first() -> None:
        with report.holding(["D"]):
            updates = report.apply([item := message(t=1)])
            inside.set()
            release.wait(10)  # storing, slowly
            report.commit(updates)
            results.append(item.telemetry[0].values)

    def second() -> None:
        with report.holding(["D", "E"]):
            report.apply([item := message(t=1)])
            results.append(item.telemetry[0].values)

    one = threading.Thread(target=first)
    one.start()
    assert inside.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.2)
    assert two.is_alive()  # waiting for D's turn (holding it, this never passes however slow the box)
    release.set()
    one.join(10)
    two.join(10)
    assert results == [{"t": 1}, {}]  # the second saw the first's value as sent: no double report


def test_a_reload_shares_the_state_and_forgets_keys_now_sent_as_received() -> None:
    old = ReportFilter(mapping_strategies({"type": "ON_CHANGE"}, {}))
    assert sent(old, message(t=1, h=1)) == ({"fw": "1"}, {"t": 1, "h": 1})
    new = ReportFilter(mapping_strategies({"type": "ON_CHANGE"}, {"timeseries": [
        {"key": "h", "reportStrategy": {"type": "ON_RECEIVED"}}]}))
    new.adopt(old)
    assert new.stats()["tracked_keys"] == 2  # fw and t; h is sent as received now
    assert sent(old, message(t=2)) == ({}, {"t": 2})  # a request still running on the old filter...
    assert sent(new, message(t=2)) == ({}, {})  # ...is known to the new one
