"""The shipped configs and every JSON example of rest-connector.md go through the real validator."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connectors.rest.config import load_rest_config, read_rest_config
from gateway.config.check import check_report
from gateway.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
SPEC = Path("/work/shared/spec/rest-connector.md")
FIXTURE_EXAMPLES = sorted((CONFIGS / "spec_examples").glob("example_*.json.txt"))
MINIMAL_MAPPING = ('"mapping": [{"endpoint": "/x", "converter": {"type": "json", '
                   '"deviceNameExpression": "${n}"}}]')


def spec_examples() -> list[str]:
    """The JSON examples of rest-connector.md, in order: the full example first, then the fragments."""
    text = SPEC.read_text(encoding="utf-8")
    blocks = re.findall(r"\{% highlight json %\}\n(.*?)\n\{% endhighlight %\}", text, re.S)
    return blocks + re.findall(r"```json\n(.*?)```", text, re.S)


def as_document(example: str) -> str:
    """A fragment (``"key": [...]``) wrapped into a whole rest.json; the spec's trailing commas dropped."""
    body = re.sub(r",(\s*[\]}])", r"\1", example.strip().rstrip(","))
    if body.startswith("{"):
        return body
    return "{" + body + ", " + MINIMAL_MAPPING + "}"


def test_shipped_configs_load() -> None:
    loaded = load_config(str(ROOT / "config" / "gateway.yaml"), env={})
    assert loaded.gateway.thingsboard.qos == 1
    [(entry, rest)] = loaded.connectors
    assert entry.type == "rest" and rest.format == "legacy"
    assert [(m.endpoint, m.methods) for m in rest.mappings] == [("/my_devices", ("POST",)),
                                                                 ("/anon1", ("GET", "POST"))]
    assert [w.pointer for w in loaded.warnings] == ["/thingsboard/security/accessToken"]  # the placeholder


def test_shipped_configs_check_ok() -> None:
    code, text = check_report(str(ROOT / "config" / "gateway.yaml"), env={})
    assert code == 0, text
    assert "OK, ThingsBoard gateway legacy format (rest-connector.md)" in text
    assert "/my_devices  security basic, converter json" in text
    assert "Configuration is valid." in text


def test_fixture_examples_match_the_spec() -> None:
    if not SPEC.exists():
        pytest.skip("rest-connector.md is not on this machine; the fixture copies are used")
    assert [p.read_text(encoding="utf-8") for p in FIXTURE_EXAMPLES] == spec_examples()


def test_shipped_rest_json_is_the_spec_example_verbatim_plus_the_device_api() -> None:
    shipped = json.loads((ROOT / "config" / "rest.json").read_text(encoding="utf-8"))
    device_api = shipped.pop("deviceApi")  # issue #12: the shipped config serves CoAP on 5683
    assert shipped == json.loads(FIXTURE_EXAMPLES[0].read_text(encoding="utf-8"))
    assert device_api["coap"]["port"] == 5683 and device_api["coap"].get("enabled", True)


@pytest.mark.parametrize("example", FIXTURE_EXAMPLES, ids=lambda p: p.name)
def test_every_documented_example_validates(example: Path, tmp_path: Path) -> None:
    path = tmp_path / "rest.json"
    path.write_text(as_document(example.read_text(encoding="utf-8")), encoding="utf-8")
    config, problems = read_rest_config(str(path), [str(ROOT / "extensions")])
    assert problems.errors == [] and config is not None
    assert config.mappings


def test_current_format_twin_loads() -> None:
    config = load_rest_config(str(CONFIGS / "current_twin.json"), [str(ROOT / "extensions")])
    assert config.format == "current"
    assert len(config.server_side_rpc) == 2


def _keys(schema: object) -> set[str]:
    """Every property name anywhere in a schema (except those only accepted with a warning)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, sub in schema.get("properties", {}).items():
            if not (isinstance(sub, dict) and "x-unsupported" in sub):
                found.add(key)
        for value in schema.values():
            found |= _keys(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _keys(value)
    return found


@pytest.mark.parametrize(("schema", "doc"), [
    ("connectors/rest/schema.json", "connectors/rest/README.md"),
    ("gateway/config/general_schema.json", "docs/configuration.md"),
])
def test_every_setting_is_documented(schema: str, doc: str) -> None:
    keys = _keys(json.loads((ROOT / schema).read_text(encoding="utf-8")))
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert sorted(k for k in keys if f"`{k}`" not in text and f".{k}`" not in text) == []


def test_readme_examples_validate(tmp_path: Path) -> None:
    readme = (ROOT / "connectors/rest/README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", readme, re.S)
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"readme_{index}.json"
        path.write_text(as_document(block), encoding="utf-8")
        config, problems = read_rest_config(str(path), [str(ROOT / "extensions")])
        assert problems.errors == [] and config is not None and config.format == "current"
