"""Broken configs are always a ``check`` error (exit 1, a message), never a traceback; converters never crash."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from converters.base import ConversionError
from converters.config import ConverterConfigError
from converters.json_converter import JsonConverter
from converters.model import ConvertedData
from gateway.config.check import check_report
from gateway.uplink import encode_record
from tests.fixtures.daemon import ROOT
from tests.fuzz.support import Outcomes, fuzz_settings

EXPRESSIONS = ["${", "}", "${}", "${ }", "${a", "${a.b.c}", "${a[0]}", "${a[-1]}", "${a[99999999999999999999]}",
               "${[0]}", "${$.a}", "$${a}", "${a}${b}", "${${a}}", "${a..b}", "${a['b']}", "${a[*]}",
               "${\u00e9}", "${\x00}", "${" + "a." * 500 + "a}", "x" * 10_000, "", "${name}"]
TYPES = ["string", "double", "float", "int", "integer", "long", "bool", "boolean", "json", "Double", "raw", "",
         None, 5]
WEIRD = st.one_of(
    st.sampled_from(EXPRESSIONS), st.sampled_from(TYPES), st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.floats(allow_nan=False), st.text(max_size=8),
    st.builds(list), st.builds(dict), st.builds(lambda: ["POST", 1]), st.builds(lambda: {"type": "basic"}),
    st.sampled_from(["../x.Cls", "os.path.Cls", "no_such.Cls", "Cls", "1bad", "CustomConverter"]),
)


def shipped(name: str) -> Any:
    with open(os.path.join(ROOT, "config", name), encoding="utf-8") as fh:
        return json.load(fh)


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) inside a JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


@st.composite
def mutated_rest(draw: st.DrawFn) -> Any:
    """The shipped rest.json with a few values replaced, keys deleted or lists emptied."""
    document = copy.deepcopy(shipped("rest.json"))
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_of(document)
        path = draw(st.sampled_from(paths))
        if not path:
            if draw(st.integers(0, 9)) == 0:
                return draw(WEIRD)
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["timestampExpression", "extension", "deviceInfo", "maxBodySize",
                                         "threads", "channelTimeout", "x"]))] = draw(WEIRD)
        else:
            parent[path[-1]] = draw(WEIRD)
    return document


def write_configs(folder: Path, rest: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rest.json").write_text(json.dumps(rest), encoding="utf-8")
    general = {"thingsboard": {"host": "127.0.0.1", "port": 1883, "security": {"accessToken": "t"}},
               "storage": {"type": "memory"},
               "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}]}
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(general), encoding="utf-8")
    return path


def test_mutated_shipped_rest_json_in_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    outcomes = Outcomes("rest.json mutations (generated, check in-process)")
    folder = tmp_path_factory.mktemp("cfg")

    @fuzz_settings(ci_examples=300)
    @given(mutated_rest())
    def one(rest: Any) -> None:
        code, text = check_report(str(write_configs(folder, rest)))
        outcomes.add("exit 0 (valid)" if code == 0 else "exit 1 (problems listed)")
        assert code in (0, 1)
        assert "internal error" not in text, text  # check_report's last-resort catch hides a reader bug
        if code == 1:
            assert "Configuration is INVALID" in text and ("rest.json" in text or "gateway.yaml" in text), text

    try:
        one()
    finally:
        outcomes.write()


def test_check_command_on_generated_configs(tmp_path_factory: pytest.TempPathFactory) -> None:
    outcomes = Outcomes("rest.json mutations (generated, python -m gateway check)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    counter = iter(range(10 ** 6))

    @fuzz_settings(ci_examples=24, soak_examples=400)
    @given(mutated_rest())
    def one(rest: Any) -> None:
        config = write_configs(tmp_path_factory.mktemp(f"check{next(counter)}"), rest)
        done = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(config)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        outcomes.add(f"exit {done.returncode}")
        output = done.stdout + done.stderr
        assert done.returncode in (0, 1), output
        assert "Traceback" not in output and "internal error" not in output, output
        assert ("Configuration is valid." if done.returncode == 0 else "Configuration is INVALID") in output

    try:
        one()
    finally:
        outcomes.write()


converter_sections = st.fixed_dictionaries(
    {"deviceNameExpression": st.sampled_from(EXPRESSIONS) | st.text(max_size=10)},
    optional={
        "type": st.sampled_from(["json", None, 5]),
        "deviceTypeExpression": WEIRD,
        "timestampExpression": WEIRD,
        "attributes": st.lists(st.fixed_dictionaries({"type": WEIRD, "key": WEIRD, "value": WEIRD}), max_size=3)
        | WEIRD,
        "timeseries": st.lists(st.fixed_dictionaries({"type": st.sampled_from(TYPES), "key": st.text(max_size=4),
                                                      "value": st.sampled_from(EXPRESSIONS)}), max_size=4),
    })
request_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c", "name", "0"]),
                                                                inner, max_size=4),
    max_leaves=10,
)


CONVERTER_OUTCOMES = Outcomes("json converter sections x messages (generated, in-process)")


@pytest.fixture(scope="module", autouse=True)
def write_converter_outcomes() -> Iterator[None]:
    yield
    CONVERTER_OUTCOMES.write()


@fuzz_settings(ci_examples=400, soak_examples=40_000)
@given(section=converter_sections, data=request_data)
def test_json_converter_builds_or_refuses_and_converts_or_raises_conversion_error(section: dict, data: Any) -> None:
    try:
        converter = JsonConverter(section)
    except ConverterConfigError as exc:
        CONVERTER_OUTCOMES.add("config refused (ConverterConfigError)")
        assert str(exc)
        return
    try:
        result = converter.convert(section, data if isinstance(data, dict) else {"a": data})
    except ConversionError as exc:
        CONVERTER_OUTCOMES.add("message refused (ConversionError, a 400)")
        assert str(exc)
        return
    CONVERTER_OUTCOMES.add("converted")
    assert isinstance(result, ConvertedData)
    try:
        json.loads(encode_record(result))
    except ValueError as exc:  # the handler answers 400 for this: name the device and the reason
        assert "device" in str(exc)
