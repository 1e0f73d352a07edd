"""Unit tests for the ${...} expression engine: resolution order, raw values, missing values, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from converters.casting import CastError
from converters.expressions import ExpressionError, MissingValue, Template, compile_template, constant


def test_single_placeholder_keeps_the_json_type() -> None:
    data = {"n": 32, "f": 21.5, "b": True, "o": {"a": [1]}, "s": "x"}
    assert compile_template("${n}").render(data) == 32
    assert compile_template("${f}").render(data) == 21.5
    assert compile_template("${b}").render(data) is True
    assert compile_template("${o}").render(data) == {"a": [1]}
    assert compile_template("${s}").render(data) == "x"


def test_mixed_text_renders_json_text_for_non_strings() -> None:
    data = {"id": 7, "site": "north", "ok": False, "o": {"k": "v"}}
    template = compile_template("Device ${id}-${site} ok=${ok} ${o}")
    assert template.render(data) == 'Device 7-north ok=false {"k":"v"}'
    assert template.placeholders == ["id", "site", "ok", "o"]
    assert not template.is_constant and not template.is_single


def test_constant_text() -> None:
    template = compile_template("Device 2")
    assert template.is_constant and template.placeholders == []
    assert template.render({}) == "Device 2"
    assert compile_template("").render({"a": 1}) == ""
    assert compile_template("cost: $5 {x}").render({}) == "cost: $5 {x}"


def test_constant_keeps_placeholder_syntax_verbatim() -> None:
    template = constant("Literal ${x}")
    assert template.is_constant
    assert template.render({"x": 1}) == "Literal ${x}"


@pytest.mark.parametrize(
    "key", ["sensor_name", "sensor-name", "name with space", "température", "a.b", "x[0]", "a:b", "日本"]
)
def test_exact_top_level_key_wins(key: str) -> None:
    data = {key: "exact", "a": {"b": "nested"}, "x": ["indexed"]}
    assert compile_template("${" + key + "}").render(data) == "exact"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("a.b[0].c", 1),
        ("$.a.b[0].c", 1),
        ("arr[1]", "second"),
        ("a.name with space", "spaced"),
        ("a.modèle", "accent"),
        ("a.b[*].c", 1),
        ("$", None),  # whole document, checked below
    ],
)
def test_jsonpath(expression: str, expected: object) -> None:
    data = {
        "a": {"b": [{"c": 1}, {"c": 2}], "name with space": "spaced", "modèle": "accent"},
        "arr": ["first", "second"],
    }
    value = compile_template("${" + expression + "}").render(data)
    assert value == (data if expected is None else expected)


def test_whitespace_around_expression_is_tolerated() -> None:
    assert compile_template("${ temp }").render({"temp": 5}) == 5
    assert compile_template("${ a.b }").render({"a": {"b": 6}}) == 6


@pytest.mark.parametrize("data", [{}, {"temp": None}, {"other": 1}, [], "text", 42])
def test_missing_and_null_raise_missing_value(data: object) -> None:
    with pytest.raises(MissingValue) as info:
        compile_template("${temp}").render(data)
    assert info.value.expression == "temp"
    assert "${temp}" in str(info.value)


def test_missing_part_of_mixed_template_raises_instead_of_printing_none() -> None:
    template = compile_template("temp ${x} ${nope}")
    with pytest.raises(MissingValue) as info:
        template.render({"x": 1})
    assert info.value.expression == "nope"
    assert template.render_or({"x": 1}) is None
    assert template.render_or({"x": 1, "nope": 2}) == "temp 1 2"


def test_jsonpath_on_wrong_shapes_is_missing() -> None:
    template = compile_template("${a.b[3].c}")
    for data in ({"a": "text"}, {"a": {"b": 5}}, {"a": {"b": [1]}}, {"a": {"b": [{"c": None}]}}):
        with pytest.raises(MissingValue):
            template.render(data)


def test_null_string_value_is_kept() -> None:
    assert compile_template("${v}").render({"v": "None"}) == "None"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${a[0}", "unclosed placeholder"),
        ("x ${abc", "unclosed placeholder"),
        ("${}", "empty placeholder"),
        ("${  }", "empty placeholder"),
        ("${$.a.}", "is not a valid JSONPath"),
        ("${a..}", "is not a valid JSONPath"),
        ("${items[?(@.id)]}", "is not a valid JSONPath"),
    ],
)
def test_bad_templates_fail_at_compile_time(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("$", r"\$")):
        compile_template(text)


def test_non_text_template_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        compile_template(5)  # type: ignore[arg-type]


def test_custom_formatter_for_downlink_json() -> None:
    template = compile_template('{"deviceName":"${deviceName}","v":${v}}')
    rendered = template.render(
        {"deviceName": 'a "quoted" name', "v": 1.5},
        formatter=lambda v: json.dumps(v)[1:-1] if isinstance(v, str) else json.dumps(v),
    )
    assert json.loads(rendered) == {"deviceName": 'a "quoted" name', "v": 1.5}


def test_generic_over_any_dict_for_downlink() -> None:
    data = {"deviceName": "SN-1", "params": {"a": {"b": 3}}, "methodName": "echo"}
    assert (
        compile_template("/sensor/${deviceName}/${methodName}/${params.a.b}").render(data)
        == "/sensor/SN-1/echo/3"
    )
    assert compile_template("${params}").render(data) == {"a": {"b": 3}}


def test_template_equality_and_repr() -> None:
    assert compile_template("${a}") == compile_template("${a}")
    assert len({compile_template("${a}"), compile_template("${a}")}) == 1
    assert "Template('${a}')" == repr(compile_template("${a}"))
    assert isinstance(compile_template("x"), Template)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    text=st.text(alphabet=st.sampled_from("${}[]().*$@?'\" ab-_é0"), max_size=24) | st.text(max_size=24),
    data=json_values,
)
def test_compile_and_render_only_raise_documented_errors(text: str, data: object) -> None:
    try:
        template = compile_template(text)
    except ExpressionError:
        return
    try:
        template.render(data)
    except MissingValue:
        pass
    assert template.is_constant == (template.placeholders == [])


@settings(max_examples=100, deadline=None, database=None)
@given(key=st.text(min_size=1, max_size=12).filter(lambda k: "}" not in k and k.strip()), value=json_values)
@example(key="$", value=None)  # found by CI: the root path, with the key itself null
@example(key="a", value=None)
def test_any_top_level_key_resolves_to_its_value(key: str, value: object) -> None:
    try:
        template = compile_template("${" + key + "}")
    except ExpressionError:
        return  # path-like keys that are not valid JSONPath are refused at load
    if value is None and key.strip().startswith("$"):
        # a JSONPath key whose own value is null: the path's meaning applies, and the only non-null
        # thing in {key: None} is the message itself ("$" is the root)
        try:
            assert template.render({key: value}) == {key: value}
        except MissingValue:
            pass
    elif value is None:
        with pytest.raises(MissingValue):
            template.render({key: value})
    else:
        assert template.render({key: value}) == value


def test_non_json_value_in_mixed_template_is_a_cast_error() -> None:
    with pytest.raises(CastError):
        compile_template("x ${v}").render({"v": float("nan")})
