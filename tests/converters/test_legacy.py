"""normalize_result: ConvertedData, lists, None and the gateway's legacy dict, warned about once."""

from __future__ import annotations

import logging

import pytest

from converters.base import ConversionError
from converters.legacy import normalize_result
from converters.model import ConvertedData, TelemetryEntry

NOW = 1_700_000_000_000


def clock() -> int:
    return NOW


def test_converted_data_and_lists_pass_through() -> None:
    one = ConvertedData("A")
    two = ConvertedData("B")
    assert normalize_result(one, "X") == [one]
    assert normalize_result([one, None, two], "X") == [one, two]
    assert normalize_result(None, "X") == []
    assert normalize_result([], "X") == []


def test_legacy_dict_is_adapted() -> None:
    result = normalize_result(
        {
            "deviceName": "SN-1",
            "attributes": [{"model": "T1"}, {"fw": "2"}],
            "telemetry": [{"temp": 1}, {"hum": 2}, {"ts": "2020-09-13T12:26:40Z", "values": {"temp": 0}}],
        },
        "LegacyOne",
        now_ms=clock,
    )
    assert result == [
        ConvertedData(
            "SN-1",
            "default",
            {"model": "T1", "fw": "2"},
            [TelemetryEntry(NOW, {"temp": 1, "hum": 2}), TelemetryEntry(1_600_000_000_000, {"temp": 0})],
        )
    ]


def test_legacy_lone_dicts_and_numeric_name() -> None:
    [data] = normalize_result(
        {
            "deviceName": 5,
            "deviceType": "t",
            "attributes": {"a": 1},
            "telemetry": {"ts": 1600000000, "values": {"v": 1}},
        },
        "X",
        now_ms=clock,
    )
    assert data.to_record() == {
        "device": "5",
        "type": "t",
        "attributes": {"a": 1},
        "telemetry": [{"ts": 1_600_000_000_000, "values": {"v": 1}}],
    }


def test_legacy_warning_is_logged_once_per_converter(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="converters.legacy"):
        for _ in range(3):
            normalize_result({"deviceName": "A"}, "WarnOnceConverter")
        normalize_result([{"deviceName": "A"}], "OtherWarnOnceConverter")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("converter WarnOnceConverter returned the legacy dict" in m for m in messages) == 1
    assert sum("converter OtherWarnOnceConverter returned the legacy dict" in m for m in messages) == 1


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("text", "BadConv result is a str"),
        ([ConvertedData("A"), 5], r"BadConv result\[1\] is a int"),
        ({"deviceType": "x"}, "has no device name"),
        (ConvertedData(""), "has no device name"),
        ({"deviceName": "A", "attributes": "x"}, "attributes must be a list of objects"),
        ({"deviceName": "A", "telemetry": [{"ts": "never", "values": {"a": 1}}]}, "ts 'never'"),
        ({"deviceName": "A", "telemetry": [{"ts": 1, "values": {}, "x": 1}]}, "unexpected keys"),
        ({"deviceName": "A", "deviceType": 3}, "deviceType must be a string"),
    ],
)
def test_anything_else_is_a_conversion_error_naming_the_converter(result: object, message: str) -> None:
    with pytest.raises(ConversionError, match=message) as info:
        normalize_result(result, "BadConv")
    assert "BadConv" in str(info.value)
