"""Unit tests for datapoint type casting: every type, the rejections and their reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.casting import KNOWN_TYPES, CastError, canonical_type, cast, to_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (32, "32"),
        (21.5, "21.5"),
        (True, "true"),
        (False, "false"),
        ({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}'),
        ([10, 20], "[10,20]"),
        ("température", "température"),
        ({"k": "é"}, '{"k":"é"}'),
    ],
)
def test_string(value: object, expected: str) -> None:
    assert cast(value, "string") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(32, 32.0), ("21.5", 21.5), (" 1e3 ", 1000.0), (".5", 0.5), ("-4", -4.0), (7.25, 7.25)],
)
@pytest.mark.parametrize("type_name", ["double", "float", "DOUBLE"])
def test_double(value: object, expected: float, type_name: str) -> None:
    result = cast(value, type_name)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", "not a number"),
        ("Infinity", "not a number"),
        ("inf", "not a number"),
        (float("nan"), "not a finite number"),
        ("1e400", "not a finite number"),
        ("1_000", "not a number"),
        ("21,5", "not a number"),
        ("", "not a number"),
        (True, "is a boolean"),
        ([1], "not a number"),
        (10**400, "too large"),
    ],
)
def test_double_rejections(value: object, reason: str) -> None:
    with pytest.raises(CastError, match=reason):
        cast(value, "double")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("67", 67), (67.0, 67), (67, 67), ("6.7e1", 67), (" -3 ", -3), ("67.000", 67), (2**63 - 1, 2**63 - 1)],
)
@pytest.mark.parametrize("type_name", ["int", "integer", "long"])
def test_int(value: object, expected: int, type_name: str) -> None:
    result = cast(value, type_name)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (67.9, "not a whole number"),
        ("67.9", "not a whole number"),
        ("abc", "not a number"),
        (2**63, "64-bit"),
        ("1e30", "64-bit"),
        (False, "is a boolean"),
        (float("inf"), "not a finite number"),
        ({"a": 1}, "not a number"),
    ],
)
def test_int_rejects_instead_of_truncating(value: object, reason: str) -> None:
    with pytest.raises(CastError, match=reason):
        cast(value, "long")


@pytest.mark.parametrize("text", ["true", "True", " ON ", "yes", "y", "t", "1"])
def test_bool_true_words(text: str) -> None:
    assert cast(text, "bool") is True


@pytest.mark.parametrize("text", ["false", "OFF", "no", "n", "f", "0"])
def test_bool_false_words(text: str) -> None:
    assert cast(text, "boolean") is False


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), (1, True), (0, False), (1.0, True)]
)
def test_bool_values(value: object, expected: bool) -> None:
    assert cast(value, "bool") is expected


@pytest.mark.parametrize("value", ["maybe", 2, -1, 0.5, [], {}])
def test_bool_rejections(value: object) -> None:
    with pytest.raises(CastError, match="not a boolean"):
        cast(value, "bool")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1]}, {"a": [1]}),
        ([1, "x"], [1, "x"]),
        ('{"k": [true, null]}', {"k": [True, None]}),
        ("[1,2]", [1, 2]),
        ("42", 42),
        ("plain words", "plain words"),
        ("NaN", "NaN"),  # not valid JSON: kept as text
        (3.5, 3.5),
        (True, True),
    ],
)
def test_json(value: object, expected: object) -> None:
    assert cast(value, "json") == expected


def test_null_is_a_cast_error() -> None:
    with pytest.raises(CastError, match="null"):
        cast(None, "string")


def test_unknown_type() -> None:
    with pytest.raises(CastError, match="unknown type 'decimal'"):
        cast(1, "decimal")
    with pytest.raises(ValueError, match="known types: bool, boolean"):
        canonical_type("decimal")


def test_known_types_are_the_documented_names() -> None:
    assert {"string", "double", "float", "int", "integer", "long", "bool", "boolean", "json"} <= KNOWN_TYPES
    assert {canonical_type(t) for t in KNOWN_TYPES} == {"string", "double", "int", "bool", "json"}


def test_cast_error_reason() -> None:
    with pytest.raises(CastError) as info:
        cast("x", "int")
    assert info.value.reason == "'x' is not a number"


def test_to_text_rejects_non_json() -> None:
    with pytest.raises(CastError):
        to_text(float("inf"))
    with pytest.raises(CastError):
        to_text(object())


@settings(database=None)  # no example files left in the checkout
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_round_trips_through_text(number: int) -> None:
    assert cast(str(number), "int") == number
    assert cast(cast(number, "string"), "long") == number


@settings(database=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_round_trips_through_text(number: float) -> None:
    assert cast(cast(number, "string"), "double") == number
