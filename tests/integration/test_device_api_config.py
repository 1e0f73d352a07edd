"""The deviceApi section through the real rest.json reader: defaults, and every semantic error at once."""
from __future__ import annotations

import json
from pathlib import Path

from connectors.rest.config import read_rest_config

MAPPING = {"endpoint": "/x", "converter": {"type": "json", "deviceNameExpression": "${n}"}}


def read(tmp_path: Path, device_api: object, mapping: dict = MAPPING, fmt: str = "legacy"):
    doc = {"mapping": [mapping], "deviceApi": device_api}
    if fmt == "current":
        doc["server"] = {"host": "127.0.0.1", "port": 5000}
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return read_rest_config(str(path))


def test_defaults_in_both_formats(tmp_path: Path) -> None:
    for fmt in ("legacy", "current"):
        config, problems = read(tmp_path, {"devices": [{"accessToken": "secret-tok", "deviceName": "D"}]}, fmt=fmt)
        assert problems.errors == [] and config is not None
        api = config.device_api
        assert api is not None and api.enabled and api.base_path == "/api/v1"
        assert api.devices[0].device_type == "default" and "secret-tok" not in repr(api.devices[0])
        assert api.max_poll_timeout_ms == 300000 and api.max_concurrent_polls == 256


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    api = {"basePath": "/api/v1",
           "devices": [{"accessToken": "same", "deviceName": "A"}, {"accessToken": "same", "deviceName": "A"},
                       {"accessToken": "a/b", "deviceName": "B"}],
           "provisioning": {"provisionDeviceKey": "", "provisionDeviceSecret": "s"},
           "firmware": {"path": "./no-such-folder"}, "maxConcurrentPolls": 0, "unknown": 1}
    config, problems = read(tmp_path, api, mapping={**MAPPING, "endpoint": "/api/v1/{token}/telemetry"})
    assert config is None
    pointers = sorted(p.pointer for p in problems.errors)
    for expected in ("/deviceApi/devices/1/accessToken", "/deviceApi/devices/1/deviceName",
                     "/deviceApi/devices/2/accessToken", "/deviceApi/provisioning/provisionDeviceKey",
                     "/deviceApi/firmware/path", "/mapping/0/endpoint", "/deviceApi/maxConcurrentPolls"):
        assert expected in pointers, pointers
    assert [p.pointer for p in problems.warnings] == ["/deviceApi/unknown"]  # unknown keys: warned, ignored
    assert all(p.line for p in problems.errors if p.pointer.startswith("/deviceApi/devices"))


def test_bad_base_path(tmp_path: Path) -> None:
    config, problems = read(tmp_path, {"basePath": "api v1"})
    assert config is None and [p.pointer for p in problems.errors] == ["/deviceApi/basePath"]


def test_disabled_section_does_not_reserve_paths(tmp_path: Path) -> None:
    config, problems = read(tmp_path, {"enabled": False}, mapping={**MAPPING, "endpoint": "/api/v1/x"})
    assert problems.errors == [] and config is not None and not config.device_api.enabled


def test_coap_defaults_in_both_formats(tmp_path: Path) -> None:
    for fmt in ("legacy", "current"):
        config, problems = read(tmp_path, {"coap": {}}, fmt=fmt)
        assert problems.errors == [] and config is not None
        coap = config.device_api.coap
        assert coap is not None and coap.enabled and (coap.host, coap.port) == ("0.0.0.0", 5683)
        assert coap.observe_check_seconds == 120 and coap.max_observations == 10000
        assert (coap.ack_timeout_seconds, coap.max_retransmit) == (2.0, 4)  # RFC 7252's defaults
    config, _ = read(tmp_path, {})
    assert config.device_api.coap is None  # no "coap" object: no CoAP transport
    config, _ = read(tmp_path, {"coap": {"enabled": False, "port": 5690}})
    assert not config.device_api.coap.enabled
    config, _ = read(tmp_path, {"coap": {"ackTimeoutSeconds": 4.5, "maxRetransmit": 0}})
    assert (config.device_api.coap.ack_timeout_seconds, config.device_api.coap.max_retransmit) == (4.5, 0)


def test_coap_problems_name_key_and_fix(tmp_path: Path) -> None:
    config, problems = read(tmp_path, {"coap": {"port": 0, "observeCheckSeconds": 0, "host": "",
                                                "rateLimit": {"perSeconds": 1}, "ackTimeoutSeconds": 0.5,
                                                "maxRetransmit": 9}})
    assert config is None
    by_pointer = {p.pointer: str(p) for p in problems.errors}
    assert "0 is not allowed" in by_pointer["/deviceApi/coap/port"]
    assert "rest.json" in by_pointer["/deviceApi/coap/port"]
    for pointer in ("/deviceApi/coap/observeCheckSeconds", "/deviceApi/coap/host", "/deviceApi/coap/rateLimit",
                    "/deviceApi/coap/ackTimeoutSeconds", "/deviceApi/coap/maxRetransmit"):
        assert pointer in by_pointer, by_pointer
