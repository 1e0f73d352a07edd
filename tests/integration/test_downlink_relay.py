"""Downlink relay against a real local HTTP target: matching, templates, tries, auth, base URLs, RPC replies."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from connectors.rest.config import load_rest_config
from connectors.rest.connector import RestConnector
from tests.fixtures.daemon import free_port
from tests.fixtures.http_target import HttpTarget

SPEC_ATTRIBUTE_UPDATE = {
    "HTTPMethod": "POST", "SSLVerify": False, "httpHeaders": {"CONTENT-TYPE": "application/json"},
    "security": {"type": "anonymous"}, "timeout": 0.5, "tries": 3, "allowRedirects": True,
    "deviceNameFilter": "SN.*", "attributeFilter": ".*", "requestUrlExpression": "http://127.0.0.1:5001/",
    "valueExpression": "{\"deviceName\":\"${deviceName}\",\"${attributeKey}\":\"${attributeValue}\"}",
}
MAPPING = {"endpoint": "/my_devices", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
           "converter": {"type": "json", "deviceNameExpression": "${sensorName}", "deviceTypeExpression": "T",
                         "attributes": [{"type": "string", "key": "model", "value": "${sensorModel}"}],
                         "timeseries": []}}


class RecordingUplink:
    """The gateway side of the connector interface, recording what the connector hands over."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.replies: list[tuple[str, int, Any]] = []
        self.cond = threading.Condition()

    def send(self, data: Any) -> None:
        with self.cond:
            self.sent.extend(data)
            self.cond.notify_all()

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        json.dumps(data, allow_nan=False)
        with self.cond:
            self.replies.append((device, request_id, data))
            self.cond.notify_all()

    def status(self) -> dict[str, Any]:
        return {"status": "ok"}

    def report_marks(self, scope: str) -> list[Any]:
        return []  # keeps no reportStrategy state, like memory storage

    def forget_report_marks(self, scope: str, keys: Any) -> None:
        pass

    def reply(self, request_id: int, timeout: float = 10.0) -> Any:
        with self.cond:
            assert self.cond.wait_for(lambda: any(r[1] == request_id for r in self.replies), timeout), \
                f"no reply to {request_id}: {self.replies}"
            return next(r for r in self.replies if r[1] == request_id)[2]


@pytest.fixture
def http_target() -> Iterator[HttpTarget]:
    target = HttpTarget().start()
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def uplink() -> RecordingUplink:
    return RecordingUplink()


@pytest.fixture
def make_connector(tmp_path: Any, uplink: RecordingUplink) -> Iterator[Callable[..., RestConnector]]:
    started: list[RestConnector] = []

    def factory(attribute_updates: list | None = None, rpc: list | None = None, **server: Any) -> RestConnector:
        rest = {"host": "127.0.0.1", "port": free_port(), "mapping": [MAPPING], **server,
                "attributeUpdates": attribute_updates or [], "serverSideRpc": rpc or []}
        path = tmp_path / f"rest{len(started)}.json"
        path.write_text(json.dumps(rest), encoding="utf-8")
        connector = RestConnector("test", load_rest_config(str(path)), uplink)
        connector.start()
        started.append(connector)
        return connector

    yield factory
    for connector in started:
        connector.stop()


def update_entry(target: HttpTarget, **overrides: Any) -> dict[str, Any]:
    return {**SPEC_ATTRIBUTE_UPDATE, "requestUrlExpression": target.url + "/ok/", **overrides}


def rpc_entry(url: str, **overrides: Any) -> dict[str, Any]:
    return {"deviceNameFilter": ".*", "methodFilter": "echo", "requestUrlExpression": url, "responseTimeout": 1,
            "HTTPMethod": "GET", "valueExpression": "${params}", "timeout": 0.5, "tries": 3,
            "httpHeaders": {"Content-Type": "application/json"}, "security": {"type": "anonymous"}, **overrides}


# ---------------------------------------------------------------------- attributeUpdates

def test_spec_example_firmware_version_arrives(make_connector, http_target):
    connector = make_connector([update_entry(http_target)])
    connector.on_attribute_update("SN-001", {"FirmwareVersion": 1.1})
    (received,) = http_target.wait_count("/ok/", 1)
    assert received.method == "POST"
    assert received.headers["content-type"] == "application/json"
    assert received.json() == {"deviceName": "SN-001", "FirmwareVersion": "1.1"}


def test_device_not_matching_gets_nothing(make_connector, http_target):
    connector = make_connector([update_entry(http_target)])
    connector.on_attribute_update("XSN-5", {"FirmwareVersion": 1.1})
    connector.on_attribute_update("SN-2", {"FirmwareVersion": 1.2})
    (received,) = http_target.wait_count("/ok/", 1)
    assert received.json()["deviceName"] == "SN-2"
    connector.stop()  # drains the queue: nothing else was queued for XSN-5
    assert len(http_target.on("/ok/")) == 1
    assert connector.downlink.stats()["attribute_keys_unmatched"] == 1


def test_every_key_of_a_multi_key_update_is_relayed(make_connector, http_target):
    connector = make_connector([update_entry(http_target)])
    connector.on_attribute_update("SN-1", {"fw": "1.2", "mode": "eco", "level": 3})
    received = http_target.wait_count("/ok/", 3)
    assert [r.json() for r in received] == [{"deviceName": "SN-1", "fw": "1.2"},
                                            {"deviceName": "SN-1", "mode": "eco"},
                                            {"deviceName": "SN-1", "level": "3"}]


def test_attribute_filter_full_match(make_connector, http_target):
    connector = make_connector([update_entry(http_target, attributeFilter="fw")])
    connector.on_attribute_update("SN-1", {"fwx": 1, "xfw": 2, "fw": 3})
    (received,) = http_target.wait_count("/ok/", 1)
    connector.stop()
    assert received.json() == {"deviceName": "SN-1", "fw": "3"}
    assert len(http_target.on("/ok/")) == 1


def test_json_escaping_of_quotes_and_backslashes(make_connector, http_target):
    connector = make_connector([update_entry(http_target)])
    nasty = 'v1.2 "beta" \\ back\nslash'
    connector.on_attribute_update("SN-1", {'we"ird\\key': nasty})
    (received,) = http_target.wait_count("/ok/", 1)
    assert received.json() == {"deviceName": "SN-1", 'we"ird\\key': nasty}


def test_lone_placeholder_takes_the_json_form(make_connector, http_target):
    connector = make_connector([update_entry(http_target, valueExpression='{"key": "${attributeKey}", '
                                                                          '"v": ${attributeValue}}')])
    connector.on_attribute_update("SN-1", {"n": 42, "b": True, "o": {"a": 1}, "s": 'say "hi"', "z": None})
    received = http_target.wait_count("/ok/", 5)
    assert [r.json()["v"] for r in received] == [42, True, {"a": 1}, 'say "hi"', None]


def test_json_template_without_content_type_is_sent_as_json(make_connector, http_target):
    connector = make_connector([update_entry(http_target, httpHeaders={})])
    connector.on_attribute_update("SN-1", {"fw": 'a "b"'})
    (received,) = http_target.wait_count("/ok/", 1)
    assert received.headers["content-type"] == "application/json"
    assert received.json() == {"deviceName": "SN-1", "fw": 'a "b"'}


def test_text_body_is_sent_as_is(make_connector, http_target):
    connector = make_connector([update_entry(http_target, httpHeaders={"Content-Type": "text/plain"},
                                             valueExpression="${attributeKey}=${attributeValue}")])
    connector.on_attribute_update("SN-1", {"fw": 'a "b"', "obj": {"x": [1]}})
    received = http_target.wait_count("/ok/", 2)
    assert [r.body for r in received] == [b'fw=a "b"', b'obj={"x":[1]}']


def test_url_values_are_percent_encoded_path_segments(make_connector, http_target):
    url = http_target.url + "/ok/${deviceName}/${attributeKey}?v=${attributeValue}"
    connector = make_connector([update_entry(http_target, requestUrlExpression=url, deviceNameFilter=".*")])
    connector.on_attribute_update("SN/../x?y#z", {"a b": "1&c=2"})
    connector.on_attribute_update("..", {"k": "."})
    first, second = sorted(http_target.wait_count("/ok/", 2), key=lambda r: len(r.path), reverse=True)
    assert first.path == "/ok/SN%2F..%2Fx%3Fy%23z/a%20b?v=1%26c%3D2"
    assert second.path == "/ok/%2E%2E/k?v=%2E"


def test_tries_a_target_that_fails_twice_then_succeeds(make_connector, http_target):
    connector = make_connector([update_entry(http_target, requestUrlExpression=http_target.url + "/flaky/a")])
    connector.on_attribute_update("SN-1", {"fw": 1})
    http_target.wait_count("/flaky/a", 3)
    connector.stop()
    assert len(http_target.on("/flaky/a")) == 3
    assert connector.downlink.stats()["attribute_updates_relayed"] == 1


def test_failure_after_all_tries_is_an_error_log(make_connector, http_target, caplog):
    connector = make_connector([update_entry(http_target, requestUrlExpression=http_target.url + "/fail/x",
                                             tries=2)])
    with caplog.at_level(logging.ERROR):
        connector.on_attribute_update("SN-7", {"fw": 1})
        http_target.wait_count("/fail/x", 2)
        connector.stop()
    assert len(http_target.on("/fail/x")) == 2
    (record,) = [r for r in caplog.records if "not relayed" in r.getMessage()]
    message = record.getMessage()
    assert "SN-7" in message and "fw" in message and "/fail/x" in message and "500" in message
    assert connector.downlink.stats()["attribute_updates_failed"] == 1


def test_basic_auth_to_the_target(make_connector, http_target):
    entry = update_entry(http_target, requestUrlExpression=http_target.url + "/auth/x",
                         security={"type": "basic", "username": "user", "password": "secret"})
    connector = make_connector([entry])
    connector.on_attribute_update("SN-1", {"fw": 1})
    (received,) = http_target.wait_count("/auth/x", 1)
    connector.stop()
    assert received.headers["authorization"].startswith("Basic ")
    assert connector.downlink.stats()["attribute_updates_relayed"] == 1


def test_method_and_redirects(make_connector, http_target):
    entry = update_entry(http_target, requestUrlExpression=http_target.url + "/redirect/r", httpMethod="put")
    del entry["HTTPMethod"]
    connector = make_connector([entry])
    connector.on_attribute_update("SN-1", {"fw": 1})
    redirected = http_target.wait_count("/ok/r", 1)
    assert http_target.on("/redirect/r")[0].method == "PUT"
    assert redirected[0].path == "/ok/r"


def test_relative_url_uses_entry_then_connector_base(make_connector, http_target):
    entry_base = update_entry(http_target, requestUrlExpression="/ok/entry/${deviceName}", baseUrl=http_target.url)
    connector_base = update_entry(http_target, requestUrlExpression="ok/connector/${deviceName}")
    make_connector([entry_base, connector_base], baseUrl=http_target.url).on_attribute_update("SN-1", {"fw": 1})
    assert http_target.wait_count("/ok/entry/SN-1", 1)
    assert http_target.wait_count("/ok/connector/SN-1", 1)


def test_relative_url_without_base_posts_back_into_the_gateway(make_connector, uplink):
    entry = {**SPEC_ATTRIBUTE_UPDATE, "requestUrlExpression": "/my_devices",
             "valueExpression": '{"sensorName": "${deviceName}", "sensorModel": ${attributeValue}}'}
    connector = make_connector([entry])
    connector.on_attribute_update("SN-9", {"model": "T3000"})
    with uplink.cond:
        assert uplink.cond.wait_for(lambda: uplink.sent, 10)
    (data,) = uplink.sent
    assert data.device_name == "SN-9"
    connector.stop()
    assert connector.downlink.stats()["attribute_updates_relayed"] == 1


# ---------------------------------------------------------------------- serverSideRpc

def test_spec_echo_rpc_replies_with_the_parsed_body(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/echo/${deviceName}")])
    assert connector.on_rpc("SN-1", 7, "echo", {"a": 1, "b": "x"}) is True
    assert uplink.reply(7) == {"result": {"a": 1, "b": "x"}}
    (received,) = http_target.on("/echo/SN-1")
    assert received.method == "GET"


def test_rpc_text_body_result(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/text/")])
    connector.on_rpc("SN-1", 8, "echo", None)
    assert uplink.reply(8) == {"result": "plain text"}


def test_rpc_templates_request_id_rest_id_and_params(make_connector, http_target, uplink):
    url = http_target.url + "/echo/${deviceName}/${methodName}/${requestId}/${restId}/${params.x}/${params.a.b}"
    entry = rpc_entry(url, methodFilter="set.*", HTTPMethod="POST",
                      valueExpression='{"x": ${params.x}, "all": ${params}, "t": "${params.a.b}"}')
    connector = make_connector(rpc=[entry])
    connector.on_rpc("SN-1", 9, "setValue", {"x": 5, "a": {"b": 'q"t'}})
    assert uplink.reply(9) == {"result": {"x": 5, "all": {"x": 5, "a": {"b": 'q"t'}}, "t": 'q"t'}}
    (received,) = http_target.on("/echo/")
    assert received.path == "/echo/SN-1/setValue/9/9/5/q%22t"


def test_string_params_are_the_bare_string_in_urls(make_connector, http_target, uplink):
    entry = rpc_entry(http_target.url + "/text/${params}", httpHeaders={"Content-Type": "text/plain"})
    connector = make_connector(rpc=[entry])
    connector.on_rpc("SN-1", 10, "echo", "scalar-param")
    assert uplink.reply(10) == {"result": "plain text"}
    (received,) = http_target.on("/text/")
    assert received.path == "/text/scalar-param" and received.body == b"scalar-param"


def test_no_reply_rpc_is_sent_without_reply(make_connector, http_target, uplink):
    entry = rpc_entry(http_target.url + "/ok/${deviceName}/${requestId}", methodFilter="no-reply",
                      HTTPMethod="POST")
    del entry["responseTimeout"]
    connector = make_connector(rpc=[entry])
    assert connector.on_rpc("SN-1", 11, "no-reply", {"k": 1}) is True
    (received,) = http_target.wait_count("/ok/SN-1/11", 1)
    assert received.json() == {"k": 1}
    connector.stop()
    assert uplink.replies == []
    assert connector.downlink.stats()["rpc_sent_no_reply"] == 1


def test_target_timeout_replies_408(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/slow/x", timeout=0.2, tries=1)])
    connector.on_rpc("SN-1", 12, "echo", {})
    assert uplink.reply(12) == {"error": "timeout", "code": 408}


def test_target_500_replies_error_and_code(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/fail/x", tries=1)])
    connector.on_rpc("SN-1", 13, "echo", {})
    assert uplink.reply(13) == {"error": "Internal Server Error", "code": 500}


def test_connection_refused_replies_503(make_connector, uplink):
    connector = make_connector(rpc=[rpc_entry("http://127.0.0.1:9/x", tries=1)])
    connector.on_rpc("SN-1", 14, "echo", {})
    reply = uplink.reply(14)
    assert reply["code"] == 503 and "127.0.0.1:9" in reply["error"]


def test_missing_params_path_replies_400(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/ok/${params.x}")])
    connector.on_rpc("SN-1", 15, "echo", {"y": 1})
    reply = uplink.reply(15)
    assert reply["code"] == 400 and "params.x" in reply["error"]


def test_first_matching_entry_wins_and_no_match_is_false(make_connector, http_target, uplink):
    first = rpc_entry(http_target.url + "/echo/first", methodFilter="ec.o")
    second = rpc_entry(http_target.url + "/echo/second")
    connector = make_connector(rpc=[first, second])
    connector.on_rpc("SN-1", 16, "echo", {"n": 1})
    assert uplink.reply(16) == {"result": {"n": 1}}
    assert http_target.on("/echo/second") == []
    assert connector.on_rpc("SN-1", 17, "xyz", {}) is False
    assert connector.on_rpc("SN-1", 18, "echox", {}) is False


def test_slow_target_for_one_device_does_not_delay_another(make_connector, http_target, uplink):
    slow = rpc_entry(http_target.url + "/slow/${deviceName}", deviceNameFilter="A", responseTimeout=5,
                     timeout=5, tries=1)
    fast = rpc_entry(http_target.url + "/echo/${deviceName}", deviceNameFilter="B")
    connector = make_connector(rpc=[slow, fast])
    started = time.monotonic()
    connector.on_rpc("A", 20, "echo", {})
    http_target.wait_count("/slow/A", 1)
    connector.on_rpc("B", 21, "echo", {"b": 1})
    assert uplink.reply(21) == {"result": {"b": 1}}
    assert not any(r[1] == 20 for r in uplink.replies)  # A is still waiting for its slow target
    assert uplink.reply(20) == {"result": {"slow": True}}
    assert time.monotonic() - started >= http_target.slow_seconds


def test_one_device_is_served_in_order(make_connector, http_target, uplink):
    connector = make_connector(rpc=[rpc_entry(http_target.url + "/echo/${requestId}")])
    for request_id in range(30, 40):
        connector.on_rpc("SN-1", request_id, "echo", {"i": request_id})
    uplink.reply(39)
    assert [r[1] for r in uplink.replies] == list(range(30, 40))


def test_health_counts_outcomes(make_connector, http_target):
    connector = make_connector([update_entry(http_target)])
    connector.on_attribute_update("SN-1", {"fw": 1})
    http_target.wait_count("/ok/", 1)
    connector.stop()
    assert connector.health()["downlink"]["attribute_updates_relayed"] == 1
    assert requests is not None
