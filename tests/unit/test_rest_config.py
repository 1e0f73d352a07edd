"""rest.json readers: both formats into one model, every semantic check, lines, and no crash on any input."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.rest.config import detect_format, load_rest_config, read_rest_config, rest_config_from_data
from gateway.config.document import Problems, parse_text
from gateway.config.errors import ConfigError
from tests.fixtures.certs import write_cert

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
EXTENSIONS = [str(ROOT / "extensions")]
SPEC_EXAMPLE = json.loads((CONFIGS / "spec_examples" / "example_0.json.txt").read_text(encoding="utf-8"))


def write(tmp_path: Path, data: Any, name: str = "rest.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2), encoding="utf-8")
    return str(path)


def problems_of(tmp_path: Path, data: Any) -> tuple[list, list]:
    config, problems = read_rest_config(write(tmp_path, data), EXTENSIONS)
    assert (config is None) == bool(problems.errors)
    return problems.errors, problems.warnings


def example() -> dict:
    return copy.deepcopy(SPEC_EXAMPLE)


def comparable(config: Any) -> Any:
    mappings = tuple(dataclasses.replace(m, converter=dataclasses.replace(m.converter, raw={}))
                     for m in config.mappings)
    return dataclasses.replace(config, file="", format="", mappings=mappings)


def test_spec_example_reads_as_legacy(tmp_path: Path) -> None:
    config = load_rest_config(write(tmp_path, SPEC_EXAMPLE), EXTENSIONS)
    assert config.format == "legacy"
    assert (config.server.host, config.server.port, config.server.ssl) == ("127.0.0.1", 5000, False)
    first, second = config.mappings
    assert first.security.type == "basic" and first.security.username == "user"
    assert first.converter.device_name_expression == "${sensorName}"
    assert first.converter.device_type_expression == "${sensorType}"
    assert [p.key for p in first.converter.timeseries] == ["temperature", "humidity"]
    assert second.converter.type == "custom" and second.converter.extension == "CustomConverter"
    assert config.attribute_updates[0]["HTTPMethod"] == "POST"
    assert [r["methodFilter"] for r in config.server_side_rpc] == ["echo", "no-reply"]


def test_current_twin_reads_to_the_same_model(tmp_path: Path) -> None:
    legacy = load_rest_config(write(tmp_path, SPEC_EXAMPLE), EXTENSIONS)
    current = load_rest_config(str(CONFIGS / "current_twin.json"), EXTENSIONS)
    assert current.format == "current"
    assert comparable(current) == comparable(legacy)


@pytest.mark.parametrize(("data", "expected"), [
    ({"mapping": []}, "legacy"),
    ({"server": {}}, "current"),
    ({"requestsMapping": {}}, "current"),
    ([], "legacy"),
])
def test_detect_format(data: Any, expected: str) -> None:
    assert detect_format(data) == expected


def test_current_without_requests_mapping_and_singular_methods(tmp_path: Path) -> None:
    data = {"server": {"port": "8080"}, "mapping": [
        {"endpoint": "/a", "HTTPMethod": "put",
         "converter": {"deviceInfo": {"deviceNameExpression": "${n}"}}},
        {"endpoint": "/b", "HTTPMethods": "get", "converter": {"deviceNameExpression": "X"}},
        {"endpoint": "/c", "converter": {"deviceNameExpression": "X"}}]}
    config = load_rest_config(write(tmp_path, data), EXTENSIONS)
    assert config.server.port == 8080
    assert [m.methods for m in config.mappings] == [("PUT",), ("GET",), ("POST",)]
    assert config.attribute_updates == ()


def test_extra_server_keys_both_formats(tmp_path: Path) -> None:
    extras = {"maxBodySize": 2048, "threads": 3, "connectionLimit": 7, "channelTimeout": 9,
              "baseUrl": "http://10.0.0.1:8080/"}
    legacy = load_rest_config(write(tmp_path, {**example(), **extras}), EXTENSIONS)
    current_data = json.loads((CONFIGS / "current_twin.json").read_text())
    current_data["server"].update(extras)
    current = load_rest_config(write(tmp_path, current_data, "current.json"), EXTENSIONS)
    for config in (legacy, current):
        server = config.server
        assert (server.max_body_bytes, server.threads, server.connection_limit, server.channel_timeout) == \
            (2048, 3, 7, 9)
        assert server.base_url == "http://10.0.0.1:8080"


def test_ssl_cert_paths_relative_to_rest_json(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    cert, key = write_cert(tmp_path / "tls", "gw")
    os.rename(cert, tmp_path / "tls" / "c.pem")
    os.rename(key, tmp_path / "tls" / "k.pem")
    data = {"server": {"SSL": True, "security": {"cert": "tls/c.pem", "key": "tls/k.pem"}},
            "mapping": example()["mapping"][:1]}
    config = load_rest_config(write(tmp_path, data), EXTENSIONS)
    assert config.server.ssl and config.server.cert == str(tmp_path / "tls" / "c.pem")
    assert config.server.key == str(tmp_path / "tls" / "k.pem")


def test_ssl_cert_home_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    data = {**example(), "SSL": True, "security": {"cert": "~/ssl/cert.pem", "key": "~/ssl/key.pem"}}
    errors, _ = problems_of(tmp_path, data)
    assert [(e.pointer, e.message) for e in errors] == [
        ("/security/cert", f"TLS cert file {tmp_path}/ssl/cert.pem does not exist"),
        ("/security/key", f"TLS key file {tmp_path}/ssl/key.pem does not exist")]


def test_downlink_entries_normalised(tmp_path: Path) -> None:
    data = example()
    data["attributeUpdates"][0].pop("HTTPMethod")
    data["attributeUpdates"][0]["httpMethod"] = "put"
    data["attributeRequests"] = [{"endpoint": "/attrs", "type": "shared", "HTTPMethods": ["post"],
                                  "deviceNameExpression": "${d}", "attributeNameExpression": "${k}"}]
    config = load_rest_config(write(tmp_path, data), EXTENSIONS)
    update = config.attribute_updates[0]
    assert update["HTTPMethod"] == "PUT" and "httpMethod" not in update
    assert config.attribute_updates[0]["requestUrlExpression"] == "http://127.0.0.1:5001/"
    assert config.attribute_requests[0]["HTTPMethods"] == ["POST"]


def _set(data: dict, pointer: str, value: Any) -> None:
    *parents, last = pointer.strip("/").split("/")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


SEMANTIC_CASES = [
    ("/mapping/1/endpoint", "/my_devices", "/mapping/1/endpoint", "is already mapped at /mapping/0"),
    ("/mapping/0/endpoint", "my_devices", "/mapping/0/endpoint", "does not start with '/'"),
    ("/mapping/0/endpoint", "/health", "/mapping/0/endpoint", "reserved"),
    ("/mapping/0/endpoint", "/metrics", "/mapping/0/endpoint", "reserved"),
    ("/mapping/0/converter/type", "xml", "/mapping/0/converter/type", "'xml' is not a known value"),
    ("/mapping/1/converter/extension", "NoSuchConverter", "/mapping/1/converter/extension",
     "'NoSuchConverter' cannot be loaded"),
    ("/mapping/0/converter/deviceNameExpression", "${unclosed", "/mapping/0/converter/deviceNameExpression",
     "invalid expression"),
    ("/mapping/0/converter/timeseries/0/type", "decimal", "/mapping/0/converter/timeseries/0/type",
     "unknown data point type 'decimal'"),
    ("/attributeUpdates/0/deviceNameFilter", "SN(", "/attributeUpdates/0/deviceNameFilter",
     "invalid regular expression"),
    ("/attributeUpdates/0/attributeFilter", "[", "/attributeUpdates/0/attributeFilter",
     "invalid regular expression"),
    ("/serverSideRpc/0/methodFilter", "*x", "/serverSideRpc/0/methodFilter", "invalid regular expression"),
    ("/mapping/0/security", {"type": "basic", "username": "u"}, "/mapping/0/security",
     "basic security without a password"),
    ("/port", "70000", "/port", "'70000' is not a valid port"),
    ("/port", "5000x", "/port", "'5000x' is not a valid port"),
    ("/port", 0, "/port", "0 is not a valid port"),
    ("/mapping/0/HTTPMethod", ["FETCH"], "/mapping/0/HTTPMethods", "unknown HTTP method 'FETCH'"),
]


@pytest.mark.parametrize(("pointer", "value", "where", "text"), SEMANTIC_CASES)
def test_each_semantic_error(tmp_path: Path, pointer: str, value: Any, where: str, text: str) -> None:
    data = example()
    _set(data, pointer, value)
    errors, _ = problems_of(tmp_path, data)
    assert [(e.pointer, text in e.message) for e in errors] == [(where, True)], errors
    assert errors[0].line is not None and errors[0].expected


def test_ssl_without_cert_and_key(tmp_path: Path) -> None:
    errors, _ = problems_of(tmp_path, {**example(), "SSL": True})
    assert [(e.pointer, e.message, e.line) for e in errors] == [
        ("/security/cert", "SSL is true but no cert file is set", 4),
        ("/security/key", "SSL is true but no key file is set", 4)]


def test_custom_converter_without_extension(tmp_path: Path) -> None:
    data = example()
    del data["mapping"][1]["converter"]["extension"]
    errors, _ = problems_of(tmp_path, data)
    assert [(e.pointer, e.message) for e in errors] == [
        ("/mapping/1/converter", 'custom converter without "extension"')]


DEVICE_API = {"devices": [{"accessToken": "tok-1", "deviceName": "Boiler"}]}
NOTHING_TO_SERVE = [  # (document, pointer of the error, its message)
    ({"host": "127.0.0.1"}, "", 'there is no "mapping" key and there is no "deviceApi" section'),
    ({"mapping": []}, "/mapping", '"mapping" is empty and there is no "deviceApi" section'),
    ({"mapping": [], "deviceApi": {**DEVICE_API, "enabled": False}}, "/mapping",
     '"mapping" is empty and "deviceApi" is disabled'),
    ({"deviceApi": {"enabled": False}}, "", 'there is no "mapping" key and "deviceApi" is disabled'),
    ({"server": {"port": 5000}}, "", 'there is no "mapping" key and there is no "deviceApi" section'),
    ({"mapping": [], "server": {}, "deviceApi": {"enabled": False}}, "/mapping",
     '"mapping" is empty and "deviceApi" is disabled'),
]


@pytest.mark.parametrize(("data", "pointer", "text"), NOTHING_TO_SERVE)
def test_no_mapping_without_device_api_is_an_error_naming_both_fixes(
        tmp_path: Path, data: dict, pointer: str, text: str) -> None:
    errors, _ = problems_of(tmp_path, data)
    assert [(e.pointer, e.message) for e in errors] == [(pointer, "nothing to serve: " + text)]
    assert '"mapping" entry' in errors[0].expected and '"deviceApi"' in errors[0].expected
    assert errors[0].line == (2 if pointer else 1)  # the "mapping" key's line, or the document's


@pytest.mark.parametrize("data", [
    {"deviceApi": DEVICE_API},
    {"mapping": [], "deviceApi": DEVICE_API},
    {"host": "127.0.0.1", "deviceApi": {}},  # enabled by being there, even with no device yet
    {"server": {"port": 5000}, "deviceApi": {**DEVICE_API, "enabled": True}},
    {"server": {"port": 5000}, "mapping": [], "requestsMapping": {}, "deviceApi": DEVICE_API},
])
def test_device_api_alone_is_a_valid_config(tmp_path: Path, data: dict) -> None:
    config, problems = read_rest_config(write(tmp_path, data), EXTENSIONS)
    assert problems.errors == [] and problems.warnings == []
    assert config is not None and config.mappings == () and config.device_api is not None
    assert config.device_api.enabled and config.format == ("current" if "server" in data else "legacy")


def test_mapping_of_the_wrong_shape_is_reported_once(tmp_path: Path) -> None:
    errors, _ = problems_of(tmp_path, {"mapping": {"endpoint": "/x"}})
    assert [(e.pointer, e.message) for e in errors] == [("/mapping", "{'endpoint': '/x'} is not a list")], errors


def test_port_message_is_human(tmp_path: Path) -> None:
    data = example()
    data["port"] = "5000x"
    [error] = problems_of(tmp_path, data)[0]
    assert str(error).endswith(
        "/port: '5000x' is not a valid port (expected an integer 1-65535 or a string of digits)")
    assert error.line == 3


def test_all_errors_at_once_with_lines(tmp_path: Path) -> None:
    text = """{
  "port": "http",
  "mapping": [
    {
      "endpoint": "/health",
      "converter": {"type": "json", "deviceNameExpression": "${a}",
                    "attributes": [{"key": "k", "value": "${v}", "type": "complex"}]}
    },
    {
      "endpoint": "/b",
      "HTTPMethods": ["POST"],
      "security": {"type": "basic"},
      "converter": {"type": "custom"}
    }
  ],
  "serverSideRpc": [{"methodFilter": "(", "requestUrlExpression": "http://x/"}]
}"""
    errors, _ = problems_of(tmp_path, text)
    assert sorted((e.line, e.pointer) for e in errors) == [
        (2, "/port"), (5, "/mapping/0/endpoint"), (7, "/mapping/0/converter/attributes/0/type"),
        (12, "/mapping/1/security"), (12, "/mapping/1/security"), (13, "/mapping/1/converter"),
        (16, "/serverSideRpc/0/methodFilter")]
    with pytest.raises(ConfigError) as raised:
        load_rest_config(write(tmp_path, text), EXTENSIONS)
    assert len(raised.value.problems) == 7


def test_unknown_and_unsupported_keys_warn(tmp_path: Path) -> None:
    data = example()
    data["mapping"][0]["HTTPMetod"] = ["POST"]
    data["debugMode"] = True
    errors, warnings = problems_of(tmp_path, data)
    assert errors == []
    by_pointer = {w.pointer: w.message for w in warnings}
    assert "did you mean 'HTTPMethod'?" in by_pointer["/mapping/0/HTTPMetod"]
    assert "not used by rest-gateway" in by_pointer["/debugMode"]


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    missing, problems = read_rest_config(str(tmp_path / "nope.json"))
    assert missing is None and problems.errors[0].message == "file not found"
    config, problems = read_rest_config(write(tmp_path, '{\n  "mapping": [\n    {,]\n}'))
    assert config is None
    [error] = problems.errors
    assert error.line == 3 and "invalid JSON" in error.message


KEYS = st.sampled_from(["mapping", "endpoint", "converter", "server", "port", "SSL", "HTTPMethod",
                        "HTTPMethods", "type", "extension", "security", "requestsMapping", "serverSideRpc",
                        "deviceInfo", "attributes", "key", "value", "x"]) | st.text(max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_any_json_document_never_crashes(data: Any) -> None:
    problems = Problems("fuzz.json")
    config = rest_config_from_data(data, "fuzz.json", problems, EXTENSIONS)
    assert (config is None) == bool(problems.errors)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_text_never_crashes(text: str) -> None:
    document = parse_text(text, "fuzz.json", "json")
    if document.data is not None:
        rest_config_from_data(document.data, "fuzz.json", document.problems, EXTENSIONS)


def test_response_section_is_read_and_checked(tmp_path: Path) -> None:
    data = example()
    data["mapping"][0]["response"] = {"successResponse": {"ok": True}, "unsuccessfulResponse": None,
                                      "responseExpected": True, "responseAttribute": "reply", "timeout": 2.5}
    data["maxWaitingResponses"] = 8
    config = load_rest_config(write(tmp_path, json.dumps(data)), EXTENSIONS)
    response = config.mappings[0].response
    assert (response.success, response.has_success, response.unsuccessful, response.has_unsuccessful) == (
        {"ok": True}, True, None, True)
    assert (response.expected, response.attribute, response.timeout) == (True, "reply", 2.5)
    assert config.server.max_waiting_responses == 8 and config.mappings[1].response.has_success is False
    data["mapping"][0]["response"] = {"responseExpected": True, "timeout": 0, "successResponse": "ok"}
    data["maxWaitingResponses"] = 0
    errors, warnings = problems_of(tmp_path, data)
    by_pointer = {e.pointer: e for e in errors}
    assert sorted(by_pointer) == ["/mapping/0/response/responseExpected", "/mapping/0/response/timeout",
                                  "/maxWaitingResponses"]
    assert "responseAttribute" in by_pointer["/mapping/0/response/responseExpected"].expected
    assert not [w for w in warnings if "response" in w.pointer]


def test_waiting_requests_must_not_fill_the_connection_limit(tmp_path: Path) -> None:
    # each waiting request keeps its connection: at connectionLimit waitress stops accepting anyone
    data = example()
    data["mapping"][0]["response"] = {"responseExpected": True, "responseAttribute": "reply"}
    data.update(maxWaitingResponses=100, threads=8, connectionLimit=107)
    errors, _ = problems_of(tmp_path, data)
    assert [e.pointer for e in errors] == ["/connectionLimit"]
    assert "maxWaitingResponses 100" in errors[0].message and "at least 108" in errors[0].expected
    data["deviceApi"] = {"devices": [], "maxConcurrentPolls": 50}
    data["connectionLimit"] = 157
    errors, _ = problems_of(tmp_path, data)
    assert [e.pointer for e in errors] == ["/connectionLimit"]
    assert "deviceApi.maxConcurrentPolls 50" in errors[0].message and "at least 158" in errors[0].expected
    data["connectionLimit"] = 200
    assert problems_of(tmp_path, data)[0] == []
    del data["mapping"][0]["response"], data["deviceApi"]
    data["connectionLimit"] = 5  # nothing waits: any limit will do
    assert problems_of(tmp_path, data)[0] == []


def test_report_strategy_is_checked(tmp_path: Path) -> None:
    data = example()
    data["mapping"][0]["reportStrategy"] = {"type": "ON_REPORT_PERIOD", "reportPeriod": 5000}
    data["mapping"][0]["converter"]["timeseries"][0]["reportStrategy"] = {"type": "DISABLED"}
    errors, warnings = problems_of(tmp_path, data)
    assert errors == [] and not [w for w in warnings if "reportStrategy" in w.pointer]
    data["mapping"][0]["reportStrategy"] = {"type": "SOMETIMES", "reportPeriod": 0}
    data["mapping"][0]["converter"]["timeseries"][0]["key"] = "${sensorModel}"
    errors, _ = problems_of(tmp_path, data)
    pointers = sorted(e.pointer for e in errors)
    assert pointers == ["/mapping/0/converter/timeseries/0/reportStrategy", "/mapping/0/reportStrategy/reportPeriod",
                        "/mapping/0/reportStrategy/type"], pointers


def test_a_top_level_report_strategy_is_the_connectors_default(tmp_path: Path) -> None:
    data = example()
    data["reportStrategy"] = {"type": "ON_CHANGE", "aggregationFunction": "MAX"}
    errors, warnings = problems_of(tmp_path, data)
    assert errors == [] and [w.pointer for w in warnings if "reportStrategy" in w.pointer] == [
        "/reportStrategy/aggregationFunction"]
    data["reportStrategy"] = {"reportPeriod": 5}
    errors, _ = problems_of(tmp_path, data)
    assert [e.pointer for e in errors] == ["/reportStrategy"]
