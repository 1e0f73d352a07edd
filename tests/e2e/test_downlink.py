"""Downlink end to end: the daemon as a process, a real broker playing ThingsBoard, a real HTTP target.

One daemon, broker and target serve the whole module (each test uses its own device names), so
the suite stays fast while every message really crosses MQTT and HTTP.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.broker import Broker, Subscriber
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.http_target import HttpTarget

SPEC_VALUE = "{\"deviceName\":\"${deviceName}\",\"${attributeKey}\":\"${attributeValue}\"}"
SPEC_POST_ATTRIBUTES_VALUE = (
    "{\"sensorName\":\"${deviceName}\", \"sensorModel\":\"${params.sensorModel}\", \"certificateNumber\":"
    "\"${params.certificateNumber}\", \"temp\":\"${params.temp}\", \"hum\":\"${params.hum}\"}")


def rest_config(target: str) -> dict[str, Any]:
    update = {"HTTPMethod": "POST", "SSLVerify": False, "httpHeaders": {"CONTENT-TYPE": "application/json"},
              "security": {"type": "anonymous"}, "timeout": 0.5, "tries": 3, "allowRedirects": True,
              "attributeFilter": ".*", "valueExpression": SPEC_VALUE}
    rpc = {"deviceNameFilter": ".*", "responseTimeout": 1, "HTTPMethod": "GET", "valueExpression": "${params}",
           "timeout": 0.5, "tries": 3, "httpHeaders": {"Content-Type": "application/json"},
           "security": {"type": "anonymous"}}
    return {
        "host": "127.0.0.1", "SSL": False,
        "mapping": [{"endpoint": "/my_devices", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
                     "converter": {"type": "json", "deviceNameExpression": "${sensorName}",
                                   "deviceTypeExpression": "default",
                                   "attributes": [{"type": "string", "key": "model", "value": "${sensorModel}"}],
                                   "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}"}]}}],
        "attributeUpdates": [
            {**update, "deviceNameFilter": "SN.*", "requestUrlExpression": target + "/ok/${deviceName}"},
            {**update, "deviceNameFilter": "FLAKY.*", "requestUrlExpression": target + "/flaky/${deviceName}"},
            {**update, "deviceNameFilter": "AUTH.*", "requestUrlExpression": target + "/auth/${deviceName}",
             "security": {"type": "basic", "username": "user", "password": "secret"}},
            {**update, "deviceNameFilter": "LOOP.*", "requestUrlExpression": "/my_devices",
             "valueExpression": "{\"sensorName\": \"${deviceName}\", \"sensorModel\": ${attributeValue}}"},
        ],
        "serverSideRpc": [
            {**rpc, "methodFilter": "echo", "requestUrlExpression": target + "/echo/${deviceName}"},
            {**{k: v for k, v in rpc.items() if k != "responseTimeout"}, "methodFilter": "no-reply",
             "HTTPMethod": "POST", "baseUrl": target,
             "requestUrlExpression": "sensor/${deviceName}/request/${methodName}/${requestId}"},
            {**rpc, "methodFilter": "setValue", "HTTPMethod": "POST", "valueExpression": "{\"x\": ${params.x}}",
             "requestUrlExpression": target + "/echo/${deviceName}/${params.x}"},
            {**rpc, "methodFilter": "slow", "responseTimeout": 5, "timeout": 5, "tries": 1,
             "requestUrlExpression": target + "/slow/${deviceName}"},
            {**rpc, "methodFilter": "timeout", "timeout": 0.3, "tries": 1,
             "requestUrlExpression": target + "/slow/${deviceName}"},
            {**rpc, "methodFilter": "fail", "tries": 1, "requestUrlExpression": target + "/fail/${deviceName}"},
            {**rpc, "deviceNameFilter": "SN.*", "methodFilter": "post_attributes", "requestUrlExpression":
             "/my_devices", "HTTPMethod": "POST", "timeout": 10.0, "valueExpression": SPEC_POST_ATTRIBUTES_VALUE},
        ],
        "attributeRequests": [
            {"endpoint": "/attributes/shared", "HTTPMethods": ["GET", "POST"], "type": "shared", "timeout": 2,
             "security": {"type": "anonymous"}, "deviceNameExpression": "${deviceName}",
             "attributeNameExpression": "${keys}"},
        ],
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Subscriber, HttpTarget]]:
    broker = Broker(tmp_path_factory.mktemp("broker"))
    broker.start()
    target = HttpTarget(slow_seconds=2.0, keep_alive=False).start()
    subscriber = Subscriber(broker).start()
    daemon = DaemonProcess(str(tmp_path_factory.mktemp("gw")), broker, rest_config(target.url))
    try:
        daemon.start()
        assert subscriber.wait_for(lambda m: any(t == "v1/devices/me/rpc/request/1" for t, _, _ in m), 10), \
            daemon.log_text()  # subscribed: the gateway asks for its session limits right after
        yield daemon, subscriber, target
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        subscriber.close()
        target.close()
        broker.stop()


def rpc(subscriber: Subscriber, device: str, request_id: int, method: str, params: Any) -> None:
    subscriber.publish("v1/gateway/rpc", {"device": device, "data": {"id": request_id, "method": method,
                                                                     "params": params}})


def reply(subscriber: Subscriber, device: str, request_id: int, timeout: float = 10.0) -> Any:
    def found() -> list[Any]:
        return [m for m in subscriber.on("v1/gateway/rpc")
                if isinstance(m, dict) and m.get("device") == device and m.get("id") == request_id]
    assert subscriber.wait_for(lambda _m: bool(found()), timeout), f"no reply to {device}/{request_id}"
    (message,) = found()
    return message["data"]


def print_counts(subscriber: Subscriber, ids: list[int]) -> None:
    """The ``downlink: relayed= replied= errors=`` line bench/reliability_table.py reads, from what arrived."""
    replies = {m["id"]: m.get("data") for m in subscriber.on("v1/gateway/rpc") if m.get("id") in ids}
    errors = sum(1 for data in replies.values() if isinstance(data, dict) and "error" in data)
    print(f"downlink: relayed={len(ids)} replied={len(replies)} errors={errors}")


def update(subscriber: Subscriber, device: str, data: dict[str, Any]) -> None:
    subscriber.publish("v1/gateway/attributes", {"device": device, "data": data})


# ---------------------------------------------------------------------- attributeUpdates

def test_spec_attribute_update_firmware_version_arrives(env):
    _, subscriber, target = env
    update(subscriber, "SN-001", {"FirmwareVersion": 1.1})
    (received,) = target.wait_count("/ok/SN-001", 1)
    assert received.method == "POST"
    assert received.json() == {"deviceName": "SN-001", "FirmwareVersion": "1.1"}


def test_device_not_matching_the_filter_gets_nothing(env):
    daemon, subscriber, target = env
    update(subscriber, "XSN-5", {"FirmwareVersion": 1.1})
    update(subscriber, "SN-005", {"FirmwareVersion": 1.2})
    target.wait_count("/ok/SN-005", 1)
    health = requests.get(daemon.url("/health"), timeout=5).json()
    assert target.on("/ok/XSN-5") == []
    assert "XSN-5" not in json.dumps([r.body.decode() for r in target.requests])
    assert health["status"] == "ok"


def test_multi_key_update_sends_one_request_per_key(env):
    _, subscriber, target = env
    update(subscriber, "SN-MULTI", {"fw": "1.2", "mode": "eco"})
    received = target.wait_count("/ok/SN-MULTI", 2)
    assert [r.json() for r in received] == [{"deviceName": "SN-MULTI", "fw": "1.2"},
                                            {"deviceName": "SN-MULTI", "mode": "eco"}]


def test_quotes_and_backslashes_are_json_escaped(env):
    _, subscriber, target = env
    value = '1.2 "beta" C:\\fw\\new'
    update(subscriber, "SN-ESC", {"fw": value})
    (received,) = target.wait_count("/ok/SN-ESC", 1)
    assert received.json() == {"deviceName": "SN-ESC", "fw": value}


def test_tries_a_target_failing_twice_then_succeeding(env):
    _, subscriber, target = env
    update(subscriber, "FLAKY-1", {"fw": "2"})
    received = target.wait_count("/flaky/FLAKY-1", 3)
    assert [r.json() for r in received] == [{"deviceName": "FLAKY-1", "fw": "2"}] * 3


def test_basic_auth_to_the_target(env):
    _, subscriber, target = env
    update(subscriber, "AUTH-1", {"fw": "3"})
    (received,) = target.wait_count("/auth/AUTH-1", 1)
    assert received.headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="


def test_relative_url_without_base_posts_into_the_gateway(env):
    _, subscriber, _ = env
    update(subscriber, "LOOP-1", {"model": "T3000"})
    assert subscriber.wait_for(lambda _m: subscriber.attributes_for("LOOP-1").get("model") == "T3000", 10)


# ---------------------------------------------------------------------- serverSideRpc

def test_spec_echo_rpc_with_reply(env):
    _, subscriber, target = env
    rpc(subscriber, "SN-ECHO", 101, "echo", {"a": 1, "b": "x"})
    assert reply(subscriber, "SN-ECHO", 101) == {"result": {"a": 1, "b": "x"}}
    (received,) = target.on("/echo/SN-ECHO")
    assert received.method == "GET"


def test_no_reply_rpc_is_sent_and_not_answered(env):
    _, subscriber, target = env
    rpc(subscriber, "SN-NR", 102, "no-reply", {"k": 1})
    (received,) = target.wait_count("/sensor/SN-NR/request/no-reply/102", 1)
    assert received.json() == {"k": 1}
    rpc(subscriber, "SN-NR", 103, "echo", {})  # same device, queued behind: its reply proves the first is done
    reply(subscriber, "SN-NR", 103)
    assert [m for m in subscriber.on("v1/gateway/rpc") if m.get("id") == 102] == []  # replies carry "id"


def test_params_path_in_url_and_body(env):
    _, subscriber, target = env
    rpc(subscriber, "SN-P", 104, "setValue", {"x": 42})
    assert reply(subscriber, "SN-P", 104) == {"result": {"x": 42}}
    assert target.on("/echo/SN-P/42")


def test_target_timeout_replies_408(env):
    _, subscriber, _ = env
    rpc(subscriber, "SN-TO", 105, "timeout", {})
    assert reply(subscriber, "SN-TO", 105) == {"error": "timeout", "code": 408}
    print_counts(subscriber, [105])


def test_target_500_replies_error(env):
    _, subscriber, _ = env
    rpc(subscriber, "SN-500", 106, "fail", {})
    assert reply(subscriber, "SN-500", 106) == {"error": "Internal Server Error", "code": 500}
    print_counts(subscriber, [106])


def test_no_matching_entry_replies_404_at_once(env):
    _, subscriber, _ = env
    rpc(subscriber, "SN-404", 107, "reboot", {})
    assert reply(subscriber, "SN-404", 107) == {
        "error": "no serverSideRpc entry matches device SN-404, method reboot", "code": 404}


def test_slow_target_for_device_a_does_not_delay_device_b(env):
    _, subscriber, target = env
    rpc(subscriber, "SLOW-A", 108, "slow", {})
    target.wait_count("/slow/SLOW-A", 1)
    rpc(subscriber, "FAST-B", 109, "echo", {"b": 1})
    assert reply(subscriber, "FAST-B", 109) == {"result": {"b": 1}}
    assert not [m for m in subscriber.on("v1/gateway/rpc") if m.get("id") == 108 and "result" in m.get("data", {})]
    assert reply(subscriber, "SLOW-A", 108) == {"result": {"slow": True}}
    print_counts(subscriber, [108, 109])


def test_spec_post_attributes_rpc_posts_back_into_the_gateway(env):
    _, subscriber, _ = env
    params = {"sensorModel": "T3000", "certificateNumber": "11112233445", "hum": 12, "temp": 23,
              "sensorName": "SN-001"}
    rpc(subscriber, "SN-RPC1", 110, "post_attributes", params)
    assert reply(subscriber, "SN-RPC1", 110) == {"result": {"stored": 1}}
    assert subscriber.wait_for(lambda _m: subscriber.telemetry_for("SN-RPC1"), 10)
    assert subscriber.telemetry_for("SN-RPC1")[0]["values"] == {"temperature": 23.0}
    assert subscriber.attributes_for("SN-RPC1")["model"] == "T3000"


# ---------------------------------------------------------------------- attributeRequests

def _answer_attribute_requests(subscriber: Subscriber, device: str, values: dict[str, Any]) -> threading.Thread:
    """Play ThingsBoard: answer the first attribute request for ``device`` with ``values``."""
    def run() -> None:
        def request() -> list[Any]:
            return [m for m in subscriber.on("v1/gateway/attributes/request") if m.get("device") == device]
        if subscriber.wait_for(lambda _m: bool(request()), 10):
            message = request()[0]
            keys = message.get("keys") or [message["key"]]
            found = {k: values[k] for k in keys if k in values}
            answer = {"id": message["id"], "device": device}
            if "key" in message:
                answer.update({"value": found[keys[0]]} if found else {})
            else:
                answer["values"] = found
            subscriber.publish("v1/gateway/attributes/response", answer)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_attribute_request_round_trip(env):
    daemon, subscriber, _ = env
    responder = _answer_attribute_requests(subscriber, "SN-AR", {"fw": "1.2", "mode": "eco"})
    answer = requests.post(daemon.url("/attributes/shared"), json={"deviceName": "SN-AR", "keys": "fw,mode"},
                           timeout=10)
    responder.join(10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"fw": "1.2", "mode": "eco"}
    (request,) = [m for m in subscriber.on("v1/gateway/attributes/request") if m.get("device") == "SN-AR"]
    assert request == {"id": request["id"], "device": "SN-AR", "client": False, "keys": ["fw", "mode"]}


def test_attribute_request_single_key_by_query(env):
    daemon, subscriber, _ = env
    responder = _answer_attribute_requests(subscriber, "SN-AR1", {"fw": 7})
    answer = requests.get(daemon.url("/attributes/shared"), params={"deviceName": "SN-AR1", "keys": "fw"},
                          timeout=10)
    responder.join(10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"fw": 7}


def test_attribute_request_timeout_is_504_and_does_not_block_others(env):
    daemon, subscriber, target = env
    started = time.monotonic()
    results: dict[str, Any] = {}

    def slow_request() -> None:
        results["answer"] = requests.post(daemon.url("/attributes/shared"),
                                          json={"deviceName": "SN-NOANSWER", "keys": "fw"}, timeout=10)
    waiting = threading.Thread(target=slow_request)
    waiting.start()
    assert subscriber.wait_for(lambda m: any(t == "v1/gateway/attributes/request" and b.get("device") ==
                                             "SN-NOANSWER" for t, b, _ in m), 10)
    other = requests.post(daemon.url("/my_devices"), json={"sensorName": "SN-OTHER", "sensorModel": "M",
                                                           "temp": 1}, timeout=10)
    assert other.status_code == 200
    assert "answer" not in results  # still waiting for ThingsBoard while another request was served
    waiting.join(10)
    assert results["answer"].status_code == 504
    assert time.monotonic() - started >= 2.0
    assert target is not None


# ---------------------------------------------------------------------- metrics

def test_relays_are_counted_by_entry_and_outcome_with_their_latency(env):
    from tests.e2e.test_operations import scrape, value, wait_for

    daemon, subscriber, _ = env
    relays, seconds = "rest_gateway_downlink_relays_total", "rest_gateway_downlink_relay_duration_seconds"
    echo, timeout, fail = "/serverSideRpc/0", "/serverSideRpc/4", "/serverSideRpc/5"  # entries as configured
    labels = {"connector": "REST Connector"}
    before = scrape(daemon)  # the module's other tests relay too: count this test's relays as differences
    rpc(subscriber, "SN-M1", 201, "echo", {"m": 1})
    rpc(subscriber, "SN-M2", 202, "fail", {})
    rpc(subscriber, "SN-M3", 203, "timeout", {})
    for device, request_id in (("SN-M1", 201), ("SN-M2", 202), ("SN-M3", 203)):
        reply(subscriber, device, request_id)

    def grew(samples: dict, name: str, by: float, **more: str) -> bool:
        return value(samples, name, **labels, **more) - value(before, name, **labels, **more) == by

    after = wait_for(lambda: (s := scrape(daemon)) and grew(s, relays, 1, entry=timeout, outcome="timeout") and s)
    assert grew(after, relays, 1, entry=echo, outcome="ok")
    assert grew(after, relays, 1, entry=fail, outcome="http")
    assert grew(after, relays, 1, entry=timeout, outcome="timeout")
    assert grew(after, relays, 0, entry=echo, outcome="http")
    for entry in (echo, fail, timeout):
        assert grew(after, seconds + "_count", 1, entry=entry)
        assert grew(after, seconds + "_bucket", 1, entry=entry, le="+Inf")
    assert value(after, seconds + "_sum", **labels, entry=timeout) > value(before, seconds + "_sum", **labels,
                                                                         entry=timeout)
    assert not any("SN-M" in str(key) for key in after)  # device names never become labels
