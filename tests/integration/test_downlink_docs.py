"""docs/downlink.md: every JSON example is a valid rest.json section, and bad entries are check errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connectors.rest.config import read_rest_config
from connectors.rest.downlink.model import parse_attribute_update, parse_rpc

ROOT = Path(__file__).resolve().parents[2]
MAPPING = [{"endpoint": "/my_devices", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
            "converter": {"type": "json", "deviceNameExpression": "${sensorName}", "deviceTypeExpression": "T",
                          "attributes": [], "timeseries": []}}]


def doc_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "downlink.md").read_text(encoding="utf-8"), re.S)


def as_rest(block: str) -> dict:
    text = block.strip()
    if text.startswith('"'):
        section = json.loads("{" + text + "}")
    else:
        value = json.loads(text)
        if "methodFilter" in value:
            section = {"serverSideRpc": [value]}
        else:
            return {}  # an MQTT payload or a device answer, not config
    return {"host": "127.0.0.1", "port": 5000, "mapping": MAPPING, **section}


def check(tmp_path: Path, rest: dict) -> list[str]:
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(rest, indent=2), encoding="utf-8")
    _, problems = read_rest_config(str(path))
    return [str(p) for p in problems.errors]


@pytest.mark.parametrize("index", range(len(doc_blocks())))
def test_documented_examples_validate(index: int, tmp_path: Path) -> None:
    rest = as_rest(doc_blocks()[index])
    if rest:
        assert check(tmp_path, rest) == []


def test_examples_cover_every_section() -> None:
    sections = {key for block in doc_blocks() for key in as_rest(block)}
    assert {"attributeUpdates", "serverSideRpc", "attributeRequests"} <= sections


def test_invalid_regex_and_unknown_placeholder_name_the_entry(tmp_path: Path) -> None:
    rest = {"host": "127.0.0.1", "port": 5000, "mapping": MAPPING,
            "attributeUpdates": [{"requestUrlExpression": "http://x/${deviceName}", "deviceNameFilter": "SN(["},
                                 {"requestUrlExpression": "http://x/${methodName}"}],
            "serverSideRpc": [{"requestUrlExpression": "/${params.a}", "methodFilter": "*bad"},
                              {"requestUrlExpression": "/${nope}", "valueExpression": "${unclosed"}]}
    errors = check(tmp_path, rest)
    assert len(errors) == 5, errors
    assert any("/attributeUpdates/0/deviceNameFilter" in e and "invalid regular expression" in e for e in errors)
    assert any("/attributeUpdates/1/requestUrlExpression" in e and "${methodName}" in e for e in errors)
    assert any("/serverSideRpc/0/methodFilter" in e for e in errors)
    assert any("/serverSideRpc/1/requestUrlExpression" in e and "${nope}" in e for e in errors)
    assert any("/serverSideRpc/1/valueExpression" in e for e in errors)


def test_defaults_of_entries() -> None:
    update = parse_attribute_update({"requestUrlExpression": "http://x/"}, "/attributeUpdates/0", "rest.json")
    assert (update.options.method, update.options.timeout, update.options.tries) == ("POST", 0.5, 3)
    assert update.options.allow_redirects is True and update.options.verify is False
    assert update.body_is_json and update.options.header("content-type") == "application/json"
    rpc = parse_rpc({"requestUrlExpression": "http://x/"}, "/serverSideRpc/0", "rest.json")
    assert rpc.options.method == "GET" and rpc.response_timeout is None and rpc.body.text == "${params}"
