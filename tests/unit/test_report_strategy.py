"""reportStrategy decisions (connectors/rest/report_strategy.py) on converted data, with a settable clock."""
from __future__ import annotations

from connectors.rest.report_strategy import ReportFilter, Strategy, mapping_strategies
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
