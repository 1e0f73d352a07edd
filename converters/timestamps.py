"""Message timestamps: parses epoch numbers and ISO 8601 text into milliseconds since the epoch.

Rules (:func:`parse_timestamp`):

* A number (or numeric string) is an epoch; its unit is decided by magnitude: below 10^11 it is
  seconds (fractions kept: ``1700000000.5`` → ``1700000000500``), below 10^14 milliseconds,
  below 10^17 microseconds, otherwise nanoseconds. 10^11 s is the year 5138 and 10^11 ms is
  March 1973, so real clocks are never ambiguous.
* A string that is not a number is read as ISO 8601 (``2024-01-02T03:04:05Z``,
  ``2024-01-02T03:04:05.250+02:00``, ``2024-01-02``); text without a zone is UTC.
* Booleans, negative values and anything past the year 9999 are rejected with
  :class:`TimestampError`.

One timestamp applies to a whole message (:func:`message_timestamp`): the top-level ``ts``, else
``timestamp``, else the receive time. An invalid payload timestamp falls back to the receive time
and is reported as a :class:`~converters.model.SkippedValue` with key ``"ts"``.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from converters.model import SkippedValue

TS_KEYS = ("ts", "timestamp")
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_NUMERIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def now_ms() -> int:
    """The current time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class TimestampError(ValueError):
    """A value is not a usable timestamp; the text says why."""


def _from_number(number: float | int, shown: str) -> int:
    if not math.isfinite(number):
        raise TimestampError(f"{shown} is not a finite number")
    if number < 0:
        raise TimestampError(f"{shown} is before 1970")
    if number < 1e11:
        ms = number * 1000
    elif number < 1e14:
        ms = number
    elif number < 1e17:
        ms = number / 1000
    else:
        ms = number / 1_000_000
    result = int(round(ms)) if isinstance(ms, float) else int(ms)
    if result > MAX_MS:
        raise TimestampError(f"{shown} is after the year 9999")
    return result


def _from_iso(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"{text[:40]!r} is neither an epoch number nor an ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if ms < 0:
        raise TimestampError(f"{text[:40]!r} is before 1970")
    return ms


def parse_timestamp(value: Any) -> int:
    """``value`` as milliseconds since the epoch; raises :class:`TimestampError` when it is not one."""
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"{value!r} is not a timestamp")
    if isinstance(value, int):
        return _from_number(value, str(value))
    if isinstance(value, float):
        return _from_number(value, repr(value))
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC.match(text):
            if len(text) > 40:
                raise TimestampError(f"{text[:40]}... is not a plausible timestamp")
            number: float | int = int(text) if text.lstrip("+-").isdigit() else float(text)
            return _from_number(number, text)
        return _from_iso(text)
    raise TimestampError(f"a {type(value).__name__} is not a timestamp")


def message_timestamp(data: Any, receive_ms: int) -> tuple[int, SkippedValue | None]:
    """The timestamp of a whole message and a warning when its ``ts``/``timestamp`` was unusable.

    The first of ``ts``, ``timestamp`` present (and not null) at the top level of ``data`` is
    parsed; without one, or when it is invalid, ``receive_ms`` is used.
    """
    if isinstance(data, Mapping):
        for key in TS_KEYS:
            value = data.get(key)
            if value is None:
                continue
            try:
                return parse_timestamp(value), None
            except TimestampError as exc:
                return receive_ms, SkippedValue("ts", f"{key}: {exc}; the receive time was used")
    return receive_ms, None
