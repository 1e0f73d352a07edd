"""rest.json ``idempotency`` (per mapping) and ``trustedProxies`` (top level): read, checked, summarised."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connectors.rest.config import read_rest_config
from connectors.rest.idempotency import parse_key
from connectors.rest.model import IdempotencySettings
from connectors.rest.summary import rest_summary


def config_with(tmp_path: Path, current: bool = False, **mapping: Any) -> tuple[Any, Any]:
    entry = {"endpoint": "/data", "converter": {"type": "json", "deviceNameExpression": "${name}",
                                                "timeseries": [{"type": "int", "key": "n", "value": "${n}"}]},
             **mapping}
    data: dict[str, Any] = ({"server": {"port": 5000}, "mapping": [entry]} if current
                            else {"port": 5000, "mapping": [entry]})
    data["trustedProxies"] = ["127.0.0.1", "10.0.0.0/8"]
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(data))
    return read_rest_config(str(path))


def test_sections_are_read_in_both_formats(tmp_path: Path) -> None:
    for current in (False, True):
        config, problems = config_with(tmp_path, current, idempotency={"windowSeconds": 600})
        assert not problems.errors, problems.errors
        assert config.mappings[0].idempotency == IdempotencySettings(window_seconds=600, max_keys=100_000)
        assert config.server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
        summary = "\n".join(rest_summary(config))
        assert "Idempotency-Key kept 600 s" in summary and "X-Forwarded-For of: 127.0.0.1/32, 10.0.0.0/8" in summary
    config, _ = config_with(tmp_path, idempotency={})
    assert config.mappings[0].idempotency == IdempotencySettings()
    config, _ = config_with(tmp_path)
    assert config.mappings[0].idempotency is None


def test_bad_sections_are_named(tmp_path: Path) -> None:
    _, problems = config_with(tmp_path, idempotency={"windowSeconds": 0, "maxKeys": "many", "other": 1})
    pointers = sorted(p.pointer for p in problems.errors)
    assert pointers == ["/mapping/0/idempotency/maxKeys", "/mapping/0/idempotency/windowSeconds"], problems.errors
    assert [p.pointer for p in problems.warnings] == ["/mapping/0/idempotency/other"]  # unknown keys warn
    _, problems = config_with(tmp_path, idempotency={}, response={"responseExpected": True,
                                                                   "responseAttribute": "answer"})
    assert [p.pointer for p in problems.errors] == ["/mapping/0/idempotency"]
    assert "responseExpected" in problems.errors[0].message


def test_key_syntax() -> None:
    assert parse_key('"8e03978e-40d5-43e8-bc93-6894a57f9324"') == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert parse_key(" plain-key ") == "plain-key"
    assert parse_key('""') is None and parse_key("") is None
    assert parse_key('"a"b"') is None and parse_key("back\\slash") is None and parse_key("é") is None
    assert parse_key("x" * 255) == "x" * 255 and parse_key("x" * 256) is None
