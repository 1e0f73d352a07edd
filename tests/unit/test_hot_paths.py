"""The per-request fast paths (issue #5) give exactly what the generic paths give, errors included."""
from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.rest.request_data import BadRequestData, parse_json, read_request
from converters.casting import KNOWN_TYPES, CastError, cast, caster, to_text
from converters.expressions import MissingValue, compile_template

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def outcome(function: Any, *args: Any) -> tuple[str, Any]:
    try:
        value = function(*args)
    except CastError as exc:
        return "error", str(exc)
    return type(value).__name__, value if value == value else "nan"


@given(value=json_values | st.sampled_from(["21.5", " 67 ", "6.7e1", "on", "1e400", "-0", "0x10"]),
       type_name=st.sampled_from(sorted(KNOWN_TYPES)))
def test_caster_casts_as_cast(value, type_name):
    assert outcome(caster(type_name), value) == outcome(cast, value, type_name)


def test_caster_refuses_unknown_types_at_lookup():
    with pytest.raises(ValueError, match="unknown type 'decimal'"):
        caster("decimal")


@pytest.mark.parametrize("data", [
    {"temp": 21.5, " temp ": 3, "a.b": 1, "a": {"b": 2}, "n": None},
    OrderedDict(temp=21.5, a={"b": 2}),
    MappingProxyType({"temp": 0, "a.b": None, "a": {"b": 7}}),
    [1, 2],
    "text",
])
@pytest.mark.parametrize("text", ["${temp}", "${ temp }", "${a.b}", "${n}", "${missing}", "plain", "",
                                  "T=${temp}", "${a}"])
def test_single_key_and_constant_templates_render_as_before(text, data):
    template = compile_template(text)

    def generic() -> Any:  # the rendering rules, spelled out without the fast paths
        if template.is_single:
            return template._parts[0].resolve(data)
        return "".join(p if isinstance(p, str) else to_text(p.resolve(data)) for p in template._parts)

    try:
        expected: Any = generic()
    except MissingValue as exc:
        expected = ("missing", exc.expression)
    try:
        got: Any = template.render(data)
    except MissingValue as exc:
        got = ("missing", exc.expression)
    assert got == expected


def test_json_body_errors_keep_their_messages():
    with pytest.raises(BadRequestData, match=r"^body is not valid JSON: Unexpected UTF-8 BOM .* at line 1 column 1$"):
        parse_json("\ufeff\ufeff{}".encode())
    with pytest.raises(BadRequestData, match="^body is not accepted: NaN is not valid JSON$"):
        parse_json(b'{"a": NaN}')
    with pytest.raises(BadRequestData, match="^body is not valid JSON: Expecting value at line 1 column 6$"):
        parse_json(b'{"a":')
    assert parse_json("\ufeff{\"a\": 1}".encode()) == {"a": 1}


@pytest.mark.parametrize("body", [b"", b"  \r\n\t\x0b\x0c", b" {} "])
def test_blank_bodies_are_empty(body):
    kind = read_request(body, "application/json", b"", {}, False).body_kind
    assert kind == ("empty" if not body.strip() else "json")
