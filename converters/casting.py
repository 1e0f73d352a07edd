"""Typed values: casts a resolved value to a datapoint's configured ``type``, or says why it cannot.

Rules (``type`` names are case-insensitive; see :data:`KNOWN_TYPES`):

* ``string``: strings as they are; numbers, booleans, objects and arrays as compact JSON text
  (``32`` → ``"32"``, ``true`` → ``"true"``, ``{"a": 1}`` → ``'{"a":1}'``).
* ``double`` / ``float``: numbers and numeric strings (``"21.5"`` → ``21.5``, ``32`` → ``32.0``).
  NaN and infinities are rejected: they are not valid JSON. Booleans are rejected.
* ``int`` / ``integer`` / ``long``: whole numbers only, within the 64-bit range ThingsBoard keeps
  (``"67"``, ``67.0`` and ``"6.7e1"`` → ``67``). A fractional value (``67.9``) is **rejected**
  with a reason rather than silently truncated, so no data is quietly changed; the key is then
  reported in ``skipped``.
* ``bool`` / ``boolean``: ``true``/``false``, the numbers 1 and 0, and the strings
  true/false, on/off, yes/no, y/n, t/f, 1/0 (any case, surrounding spaces ignored).
* ``json``: objects and arrays as they are; a string holding valid JSON is parsed
  (``'{"a":1}'`` → ``{"a": 1}``); anything else as it is.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_TRUE = frozenset({"true", "on", "yes", "y", "t", "1"})
_FALSE = frozenset({"false", "off", "no", "n", "f", "0"})
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")

_CANONICAL = {
    "string": "string", "str": "string",
    "double": "double", "float": "double",
    "int": "int", "integer": "int", "long": "int",
    "bool": "bool", "boolean": "bool",
    "json": "json",
}
KNOWN_TYPES: frozenset[str] = frozenset(_CANONICAL)


class CastError(ValueError):
    """A value cannot be cast to the configured type; the text says why."""

    @property
    def reason(self) -> str:
        return str(self)


def canonical_type(type_name: str) -> str:
    """The canonical name for ``type_name`` ("long" → "int"); ValueError for an unknown type."""
    try:
        return _CANONICAL[type_name.strip().lower()]
    except (KeyError, AttributeError):
        known = ", ".join(sorted(KNOWN_TYPES))
        raise ValueError(f"unknown type {type_name!r} (known types: {known})") from None


def to_text(value: Any) -> str:
    """A value as text: strings as they are, anything else as compact JSON (NaN/Infinity refused)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CastError(f"{_show(value)} is not a JSON value ({exc})") from None


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_double(value: Any) -> float:
    if type(value) is float and math.isfinite(value):  # the common case first
        return value
    if isinstance(value, bool):
        raise CastError(f"{to_text(value)} is a boolean, not a number")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise CastError(f"{value} is too large for a double") from None
    if isinstance(value, float):
        result = value
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER.match(text):
            raise CastError(f"{_show(value)} is not a number")
        result = float(text)
    else:
        raise CastError(f"{_show(value)} is not a number")
    if not math.isfinite(result):
        raise CastError(f"{_show(value)} is not a finite number (NaN and Infinity are not valid JSON)")
    return result


def _to_int(value: Any) -> int:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:  # the common case first
        return value
    if isinstance(value, bool):
        raise CastError(f"{to_text(value)} is a boolean, not a number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CastError(f"{value!r} is not a finite number")
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER.match(text):
            raise CastError(f"{_show(value)} is not a number")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise CastError(f"{_show(value)} is not a number") from None
    else:
        raise CastError(f"{_show(value)} is not a number")
    if not INT64_MIN <= number <= INT64_MAX:
        raise CastError(f"{_show(value)} is out of the 64-bit integer range")
    if number != number.to_integral_value():
        raise CastError(f"{_show(value)} is not a whole number")
    return int(number)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise CastError(f"{_show(value)} is not a boolean (expected true/false, on/off, yes/no, 1/0)")


def _to_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return value
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _to_string(value: Any) -> str:
    return to_text(value)


_CASTS = {"string": _to_string, "double": _to_double, "int": _to_int, "bool": _to_bool, "json": _to_json}


def caster(type_name: str) -> Callable[[Any], Any]:
    """The function that casts like ``cast(value, type_name)``, looked up once; ValueError for an unknown type."""
    convert = _CASTS[canonical_type(type_name)]

    def cast_one(value: Any) -> Any:
        if value is None:
            raise CastError("value is null")
        return convert(value)

    return cast_one


def cast(value: Any, type_name: str) -> Any:
    """Cast ``value`` to ``type_name``; raises :class:`CastError` with the reason when it cannot."""
    try:
        convert = caster(type_name)
    except ValueError as exc:
        raise CastError(str(exc)) from None
    return convert(value)
