"""General config (YAML/JSON), env overrides, relative paths, the loader and the JSON/YAML line index."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.check import check_report
from gateway.config.document import Problems, parse_text
from gateway.config.errors import ConfigError
from gateway.config.general import read_general
from gateway.config.loader import load_config
from gateway.config.locate import join, json_lines, yaml_lines

ROOT = Path(__file__).resolve().parents[2]
REST_JSON = ROOT / "config" / "rest.json"

GENERAL = {
    "thingsboard": {"host": "tb.example", "port": 1883, "qos": 1,
                    "security": {"accessToken": "tok-123"}},
    "storage": {"type": "sqlite", "data_file_path": "./data/gw.db"},
    "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}],
}


def write_set(folder: Path, general: dict, fmt: str = "yaml") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REST_JSON, folder / "rest.json")
    path = folder / f"gateway.{fmt}"
    text = yaml.safe_dump(general) if fmt == "yaml" else json.dumps(general, indent=2)
    path.write_text(text, encoding="utf-8")
    return str(path)


def errors_of(path: str, env: dict | None = None) -> list:
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={} if env is None else env)
    return raised.value.problems


def test_yaml_and_json_read_the_same(tmp_path: Path) -> None:
    from_yaml = load_config(write_set(tmp_path / "y", GENERAL, "yaml"), env={})
    from_json = load_config(write_set(tmp_path / "j", GENERAL, "json"), env={})
    tb = from_yaml.gateway.thingsboard
    assert (tb.host, tb.port, tb.access_token, tb.qos) == ("tb.example", 1883, "tok-123", 1)
    assert tb.protocol == "mqtt5"
    assert tb == from_json.gateway.thingsboard
    assert from_yaml.warnings == [] and from_json.warnings == []


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "ext").mkdir()
    (tmp_path / "ca.pem").write_text("x")
    security = {"type": "tlsAccessToken", "accessToken": "t", "caCert": "ca.pem"}
    general = {**GENERAL, "extensionPaths": ["ext"],
               "thingsboard": {**GENERAL["thingsboard"], "security": security}}
    loaded = load_config(write_set(tmp_path, general), env={})
    cfg = loaded.gateway
    assert cfg.storage.data_file_path == str(tmp_path / "data" / "gw.db")
    assert cfg.connectors[0].configuration == str(tmp_path / "rest.json")
    assert cfg.extension_paths == (str(tmp_path / "ext"),)
    assert cfg.thingsboard.tls is not None and cfg.thingsboard.tls.ca_cert == str(tmp_path / "ca.pem")
    assert loaded.connectors[0][1].file == str(tmp_path / "rest.json")


def test_env_overrides(tmp_path: Path) -> None:
    env = {"TB_GW_HOST": "other", "TB_GW_PORT": "8883", "TB_GW_ACCESS_TOKEN": "envtok"}
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"],
                                          "security": {"type": "usernamePassword", "username": "u",
                                                       "password": "p"}}}
    tb = load_config(write_set(tmp_path, general), env=env).gateway.thingsboard
    assert (tb.host, tb.port, tb.access_token, tb.username, tb.password) == ("other", 8883, "envtok", "", "")


def test_env_port_must_be_valid(tmp_path: Path) -> None:
    [problem] = errors_of(write_set(tmp_path, GENERAL), {"TB_GW_PORT": "18x83"})
    assert problem.pointer == "/thingsboard/port" and "TB_GW_PORT='18x83'" in problem.message


def test_extras_and_reference_aliases(tmp_path: Path) -> None:
    general = {
        "thingsboard": {**GENERAL["thingsboard"], "protocol": "mqtt311", "keepalive": 30,
                        "maxPayloadSizeBytes": 8196, "rateLimits": "10:1,300:60", "dpRateLimits": "50:1",
                        "minReconnectDelay": 2, "maxReconnectDelay": 30},
        "storage": {"type": "memory", "max_records_count": 500, "size_limit": 64,
                    "max_read_records_count": 50},
        "connectors": GENERAL["connectors"], "logLevel": "debug",
    }
    cfg = load_config(write_set(tmp_path, general), env={}).gateway
    tb = cfg.thingsboard
    assert (tb.protocol, tb.keepalive, tb.max_payload_bytes) == ("mqtt311", 30, 8196)
    assert (tb.rate_limits.messages_per_second, tb.rate_limits.datapoints_per_second) == (5.0, 50.0)
    assert (tb.min_reconnect_delay, tb.max_reconnect_delay) == (2.0, 30.0)
    assert dataclasses.astuple(cfg.storage)[0] == "memory"
    assert (cfg.storage.max_records, cfg.storage.max_size_mb, cfg.storage.read_batch) == (500, 64, 50)
    assert cfg.log_level == "DEBUG"


def test_rate_limits_object(tmp_path: Path) -> None:
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"],
                                          "rateLimits": {"messages": 20, "datapoints": 400}}}
    limits = load_config(write_set(tmp_path, general), env={}).gateway.thingsboard.rate_limits
    assert (limits.messages_per_second, limits.datapoints_per_second) == (20.0, 400.0)


def test_report_strategy_is_the_default_of_connectors_and_is_checked(tmp_path: Path) -> None:
    assert load_config(write_set(tmp_path / "none", GENERAL), env={}).gateway.thingsboard.report_strategy is None
    strategy = {"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 5000, "aggregationFunction": "SUM"}
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "reportStrategy": strategy}}
    loaded = load_config(write_set(tmp_path / "ok", general), env={})
    assert loaded.gateway.thingsboard.report_strategy == strategy
    warnings = {w.pointer: w.message for w in loaded.warnings}
    assert "not used by rest-gateway" in warnings["/thingsboard/reportStrategy/aggregationFunction"]
    assert not [p for p in warnings if p.endswith(("/reportStrategy", "/type", "/reportPeriod"))]
    general["thingsboard"]["reportStrategy"] = {"type": "SOMETIMES", "reportPeriod": 0}
    pointers = sorted(p.pointer for p in errors_of(write_set(tmp_path / "bad", general)))
    assert pointers == ["/thingsboard/reportStrategy/reportPeriod", "/thingsboard/reportStrategy/type"]


def test_storage_durability_defaults_to_power_and_is_validated(tmp_path: Path) -> None:
    assert load_config(write_set(tmp_path / "d", GENERAL), env={}).gateway.storage.durability == "power"
    general = {**GENERAL, "storage": {**GENERAL["storage"], "durability": "process"}}
    assert load_config(write_set(tmp_path / "p", general), env={}).gateway.storage.durability == "process"
    general = {**GENERAL, "storage": {**GENERAL["storage"], "durability": "fsync"}}
    [problem] = errors_of(write_set(tmp_path / "f", general))
    assert problem.pointer == "/storage/durability" and "'fsync' is not a known value" in problem.message
    assert '"power"' in problem.expected and '"process"' in problem.expected


@pytest.mark.parametrize("level", ["power", "process"])
def test_memory_storage_with_a_durability_is_an_error(tmp_path: Path, level: str) -> None:
    general = {**GENERAL, "storage": {"type": "memory", "durability": level}}
    [problem] = errors_of(write_set(tmp_path, general))
    assert problem.pointer == "/storage/durability"
    assert "cannot be given by memory storage" in problem.message and "type sqlite" in problem.expected
    assert load_config(write_set(tmp_path / "m", {**GENERAL, "storage": {"type": "memory"}}), env={})


def test_qos_zero_is_an_error_that_says_why(tmp_path: Path) -> None:
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "qos": 0}}
    [problem] = errors_of(write_set(tmp_path, general))
    assert problem.pointer == "/thingsboard/qos" and "closes the device session" in problem.expected


@pytest.mark.parametrize(("security", "pointer", "text"), [
    ({"type": "accessToken"}, "/thingsboard/security", "without an accessToken"),
    ({"type": "usernamePassword", "password": "p"}, "/thingsboard/security", "without a username"),
    ({"type": "tlsPrivateKey", "caCert": "ca.pem", "privateKey": "k.pem"}, "/thingsboard/security",
     "without \"cert\""),
    ({"type": "tlsAccessToken", "accessToken": "t", "caCert": "missing.pem"}, "/thingsboard/security/caCert",
     "missing.pem does not exist"),
    ({"type": "jwt"}, "/thingsboard/security/type", "'jwt' is not a known value"),
])
def test_security_problems(tmp_path: Path, security: dict, pointer: str, text: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "security": security}}
    problems = errors_of(write_set(tmp_path, general))
    assert [p.pointer for p in problems if text in p.message] == [pointer], problems


def test_security_type_inferred_from_keys(tmp_path: Path) -> None:
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"],
                                          "security": {"clientId": "c1", "username": "u", "password": "p"}}}
    tb = load_config(write_set(tmp_path, general), env={}).gateway.thingsboard
    assert (tb.client_id, tb.username, tb.password, tb.access_token) == ("c1", "u", "p", "")


def test_unknown_and_unsupported_keys_are_warnings(tmp_path: Path) -> None:
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "keepalve": 30, "remoteShell": False},
               "storage": {"type": "sqlite", "messages_ttl_in_days": 7}}
    warnings = {w.pointer: w.message for w in load_config(write_set(tmp_path, general), env={}).warnings}
    assert "did you mean 'keepalive'?" in warnings["/thingsboard/keepalve"]
    assert "not used by rest-gateway" in warnings["/thingsboard/remoteShell"]
    assert "not used by rest-gateway" in warnings["/storage/messages_ttl_in_days"]


def test_all_problems_across_files_at_once(tmp_path: Path) -> None:
    general = {"thingsboard": {"port": "1883", "security": {"accessToken": "t"}},
               "storage": {"type": "file"}, "logLevel": "LOUD",
               "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"},
                              {"name": "REST", "type": "rest", "configuration": "missing.json"},
                              {"name": "M", "type": "modbus", "configuration": "m.json"}]}
    path = write_set(tmp_path, general)
    rest = json.loads((tmp_path / "rest.json").read_text())
    rest["mapping"][0]["endpoint"] = "/health"
    (tmp_path / "rest.json").write_text(json.dumps(rest, indent=2))
    problems = errors_of(path)
    found = {(Path(p.file).name, p.pointer) for p in problems}
    assert found == {("gateway.yaml", "/thingsboard/port"), ("gateway.yaml", "/storage/type"),
                     ("gateway.yaml", "/logLevel"), ("gateway.yaml", "/connectors/1/name"),
                     ("gateway.yaml", "/connectors/2/type"), ("missing.json", ""),
                     ("rest.json", "/mapping/0/endpoint")}
    assert all(p.line for p in problems if p.file.endswith(("gateway.yaml", "rest.json")))
    code, text = check_report(path, env={})
    assert code == 1 and "Configuration is INVALID: 7 problem(s)" in text and "Traceback" not in text


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("thingsboard:\n  host: [unclosed\nconnectors: []\n")
    [problem] = errors_of(str(path))
    assert problem.line == 3 and "invalid YAML" in problem.message
    json_path = tmp_path / "gateway.json"
    json_path.write_text('{"thingsboard": {}\n,,}')
    [problem] = errors_of(str(json_path))
    assert problem.line == 2 and "invalid JSON" in problem.message


def test_missing_general_file(tmp_path: Path) -> None:
    [problem] = errors_of(str(tmp_path / "nope.yaml"))
    assert problem.message == "file not found"
    code, text = check_report(str(tmp_path / "nope.yaml"), env={})
    assert code == 1 and "file not found" in text


def test_json_lines_index() -> None:
    text = '{\n  "a": {"b": [1,\n    {"c/d": "x\\"}"}]},\n  "e~f": []\n}'
    index = json_lines(text)
    assert index.lines == {"": 1, "/a": 2, "/a/b": 2, "/a/b/0": 2, "/a/b/1": 3, "/a/b/1/c~1d": 3, "/e~0f": 4}
    assert index.line("/a/b/1/c~1d/deeper") == 3 and index.line("/zzz") == 1
    assert json_lines("[" * 10000 + "]" * 10000).line("/0/0/0") == 1  # no recursion limit


def test_yaml_lines_index() -> None:
    text = "a:\n  b:\n    - 1\n    - c: 2\n\n'x/y': 3\n"
    index = yaml_lines(text)
    assert index.lines == {"": 1, "/a": 1, "/a/b": 2, "/a/b/0": 3, "/a/b/1": 4, "/a/b/1/c": 4, "/x~1y": 6}
    assert yaml_lines("a: [").lines == {}


def test_pointer_join_escapes() -> None:
    assert join("/a", "b/c", "d~e", 3) == "/a/b~1c/d~0e/3"


KEYS = st.sampled_from(["thingsboard", "storage", "connectors", "security", "type", "host", "port", "qos",
                        "accessToken", "caCert", "rateLimits", "name", "configuration", "logLevel",
                        "extensionPaths", "x"]) | st.text(max_size=4) | st.integers()
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_fuzz_general_config_never_crashes(data: object) -> None:
    problems = Problems("fuzz.yaml")
    config = read_general(data, "/nonexistent/fuzz.yaml", problems, env={})
    assert (config is None) == bool(problems.errors)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}\"' \n&*!|>%@`#,?0")), max_size=60))
def test_fuzz_yaml_text_never_crashes(text: str) -> None:
    document = parse_text(text, "fuzz.yaml", "yaml")
    yaml_lines(text)
    if document.data is not None:
        read_general(document.data, "/nonexistent/fuzz.yaml", document.problems, env={})


def test_send_linger_is_read_defaulted_and_bounded(tmp_path: Path) -> None:
    default = load_config(write_set(tmp_path, GENERAL), env={}).gateway.thingsboard
    assert default.send_linger_ms == 20.0
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "sendLingerMs": 0}}
    assert load_config(write_set(tmp_path, general), env={}).gateway.thingsboard.send_linger_ms == 0.0
    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "sendLingerMs": 5000}}
    [problem] = errors_of(write_set(tmp_path, general), {})
    assert problem.pointer == "/thingsboard/sendLingerMs" and "0-1000" in problem.expected
    assert f"default {default.send_linger_ms:g};" in problem.expected  # the fix names the real default


def test_send_linger_reaches_the_mqtt_client(tmp_path: Path) -> None:
    from gateway.northbound.client import Northbound
    from gateway.storage.memory import MemoryStorage, SizeLimits

    general = {**GENERAL, "thingsboard": {**GENERAL["thingsboard"], "sendLingerMs": 20}}
    tb = load_config(write_set(tmp_path, general), env={}).gateway.thingsboard
    storage = MemoryStorage(SizeLimits(100, 1 << 20))
    try:
        assert Northbound(tb, storage).linger == 0.02
    finally:
        storage.close()
