"""Unit tests for timestamp parsing: epoch units by magnitude, ISO 8601, one timestamp per message."""

from __future__ import annotations

import pytest

from converters.model import SkippedValue
from converters.timestamps import TimestampError, message_timestamp, now_ms, parse_timestamp

MS = 1_600_000_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_600_000_000, MS),  # seconds
        (1_600_000_000.25, MS + 250),
        ("1600000000", MS),
        (" 1600000000.5 ", MS + 500),
        (MS, MS),  # milliseconds
        (str(MS), MS),
        (float(MS), MS),
        (MS * 1000, MS),  # microseconds
        (MS * 1_000_000, MS),  # nanoseconds
        (0, 0),
        ("2020-09-13T12:26:40Z", MS),
        ("2020-09-13T12:26:40.000Z", MS),
        ("2020-09-13T14:26:40+02:00", MS),
        ("2020-09-13T12:26:40", MS),  # no zone: UTC
        ("2020-09-13 12:26:40.123", MS + 123),
        ("2020-09-13", MS - (12 * 3600 + 26 * 60 + 40) * 1000),
    ],
)
def test_parse(value: object, expected: int) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "not a timestamp"),
        (None, "not a timestamp"),
        ("soon", "neither an epoch number nor an ISO 8601 date"),
        ("", "neither"),
        (-5, "before 1970"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        (float("nan"), "not a finite number"),
        ("1e400", "not a finite number"),
        ("9" * 50, "not a plausible timestamp"),
        (10**30, "after the year 9999"),
        ([1], "a list is not a timestamp"),
    ],
)
def test_parse_rejections(value: object, reason: str) -> None:
    with pytest.raises(TimestampError, match=reason):
        parse_timestamp(value)


def test_message_uses_ts_then_timestamp_then_receive_time() -> None:
    assert message_timestamp({"ts": MS, "timestamp": 1}, 5) == (MS, None)
    assert message_timestamp({"ts": None, "timestamp": 1_600_000_000}, 5) == (MS, None)
    assert message_timestamp({"other": 1}, 5) == (5, None)
    assert message_timestamp(b"raw", 5) == (5, None)


def test_invalid_message_ts_falls_back_and_is_reported() -> None:
    ts, warning = message_timestamp({"ts": "yesterday"}, 5)
    assert ts == 5
    assert isinstance(warning, SkippedValue) and warning.key == "ts"
    assert "yesterday" in warning.reason and "receive time" in warning.reason


def test_now_ms_is_milliseconds() -> None:
    assert MS < now_ms() < 10**14  # after 2020, and in milliseconds rather than seconds or µs
