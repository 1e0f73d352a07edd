"""Uplink end to end: a real daemon process, a real broker, a real subscriber seeing what ThingsBoard would."""
from __future__ import annotations

import json
import os

import pytest
import requests

from tests.fixtures.daemon import ROOT

SPEC_BODY = {"sensorName": "SN-001", "sensorType": "Thermometer", "sensorModel": "T1000",
             "certificateNumber": "125sda47gsh", "temp": 32, "hum": 67}
AUTH = ("user", "password")


def shipped_rest() -> dict:
    with open(os.path.join(ROOT, "config", "rest.json"), encoding="utf-8") as fh:
        return json.load(fh)


def current_format_rest() -> dict:
    """The shipped config rewritten in the ThingsBoard gateway 3.7+ format."""
    legacy = shipped_rest()
    mappings = []
    for m in legacy["mapping"]:
        conv = dict(m["converter"])
        name, kind = conv.pop("deviceNameExpression"), conv.pop("deviceTypeExpression")
        conv["deviceInfo"] = {
            "deviceNameExpressionSource": "request" if "${" in name else "constant",
            "deviceNameExpression": name,
            "deviceProfileExpressionSource": "request" if "${" in kind else "constant",
            "deviceProfileExpression": kind,
        }
        mappings.append({"endpoint": m["endpoint"], "HTTPMethods": m["HTTPMethod"], "security": m["security"],
                         "converter": conv})
    return {"server": {"host": "127.0.0.1", "port": 5000, "SSL": False}, "mapping": mappings,
            "requestsMapping": {"attributeRequests": [], "attributeUpdates": legacy.get("attributeUpdates", []),
                                "serverSideRpc": legacy.get("serverSideRpc", [])}}


def json_mapping(converter: dict, endpoint: str = "/data", methods=("POST",), security=None) -> dict:
    return {"host": "127.0.0.1", "port": "0", "SSL": False, "mapping": [{
        "endpoint": endpoint, "HTTPMethod": list(methods), "security": security or {"type": "anonymous"},
        "converter": {"type": "json", **converter}}]}


def published(subscriber, topic: str) -> list:
    return subscriber.on(topic)


def wait_until(subscriber, condition, timeout: float = 10.0):
    """Wait until ``condition()`` gives a truthy value, and return it."""
    result = []
    ok = subscriber.wait_for(lambda _messages: bool(result.append(condition()) or result[-1]), timeout)
    assert ok, f"timed out; received {len(subscriber.messages)} messages, the last: {subscriber.messages[-5:]}"
    return result[-1]


@pytest.mark.parametrize("rest_factory", [shipped_rest, current_format_rest], ids=["legacy", "current"])
def test_spec_curl_reaches_thingsboard(make_daemon, mqtt_subscriber, rest_factory):
    gw = make_daemon(rest_factory())
    # the spec's curl sends JSON with the form content type
    answer = requests.post(gw.url("/my_devices"), data=json.dumps(SPEC_BODY), auth=AUTH,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 1}
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    assert published(mqtt_subscriber, "v1/gateway/connect")[0] == {"device": "SN-001", "type": "Thermometer"}
    attributes = published(mqtt_subscriber, "v1/gateway/attributes")
    assert attributes == [{"SN-001": {"model": "T1000", "T1000": "on"}}]
    (telemetry,) = published(mqtt_subscriber, "v1/gateway/telemetry")
    (entry,) = telemetry["SN-001"]
    assert entry["values"] == {"temperature": 32.0, "humidity": 67.0}
    assert isinstance(entry["values"]["temperature"], float) and isinstance(entry["ts"], int)
    topics = [t for t, _, _ in mqtt_subscriber.messages]
    assert topics.index("v1/gateway/connect") < topics.index("v1/gateway/telemetry")


def test_credentials(make_daemon, mqtt_subscriber):
    gw = make_daemon(shipped_rest())
    url = gw.url("/my_devices")
    for auth, headers in [(None, {}), (("user", "wrong"), {}), (("nobody", "password"), {}),
                          (None, {"Authorization": "Bearer abc"}), (None, {"Authorization": "Basic %%%"})]:
        answer = requests.post(url, json=SPEC_BODY, auth=auth, headers=headers, timeout=5)
        assert answer.status_code == 401, (auth, headers, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert "error" in answer.json()
    assert requests.post(url, json=SPEC_BODY, auth=AUTH, timeout=5).status_code == 200
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    assert len(published(mqtt_subscriber, "v1/gateway/telemetry")) == 1


def test_routing_errors_are_json(make_daemon):
    gw = make_daemon(shipped_rest())
    missing = requests.post(gw.url("/nope"), json={}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "no endpoint at /nope"
    wrong = requests.put(gw.url("/my_devices"), json={}, auth=AUTH, timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert "PUT" in wrong.json()["error"]
    head = requests.head(gw.url("/anon1"), timeout=5)
    assert head.status_code == 405
    big = requests.post(gw.url("/my_devices"), data=b"{" + b" " * (1024 * 1024 + 10) + b"}", auth=AUTH, timeout=10)
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_bad_bodies_get_400_and_nothing_is_published(make_daemon, mqtt_subscriber):
    gw = make_daemon(shipped_rest())
    url = gw.url("/my_devices")
    cases = {b'{"sensorName": ': "not valid JSON", b"[]": "empty JSON array", b"42": "a number",
             b'{"temp": 1}': "sensorName"}
    for body, fragment in cases.items():
        answer = requests.post(url, data=body, auth=AUTH, headers={"Content-Type": "application/json"}, timeout=5)
        assert answer.status_code == 400, body
        assert fragment in answer.json()["error"], answer.json()
    # one good message proves the pipeline works and that the bad ones left nothing behind
    assert requests.post(url, json=SPEC_BODY, auth=AUTH, timeout=5).status_code == 200
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    devices = {d["device"] for d in published(mqtt_subscriber, "v1/gateway/connect")}
    assert devices == {"SN-001"}


def test_array_body_every_message_is_stored(make_daemon, mqtt_subscriber):
    gw = make_daemon(shipped_rest())
    body = [dict(SPEC_BODY, sensorName=f"SN-{i}", temp=i) for i in range(25)]
    answer = requests.post(gw.url("/my_devices"), json=body, auth=AUTH, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"stored": 25}
    def all_arrived():
        seen = {}
        for payload in published(mqtt_subscriber, "v1/gateway/telemetry"):
            for device, entries in payload.items():
                seen.setdefault(device, []).extend(e["values"]["temperature"] for e in entries)
        return seen if len(seen) == 25 else None
    seen = wait_until(mqtt_subscriber, all_arrived, timeout=10)
    assert seen == {f"SN-{i}": [float(i)] for i in range(25)}


def test_types_and_missing_values(make_daemon, mqtt_subscriber):
    kinds = ["string", "double", "float", "int", "integer", "long", "bool", "boolean", "json"]
    converter = {"deviceNameExpression": "${name}", "deviceTypeExpression": "${kind}", "attributes": [],
                 "timeseries": [{"type": k, "key": k, "value": "${" + k + "}"} for k in kinds]
                 + [{"type": "double", "key": "absent", "value": "${nothere}"},
                    {"type": "int", "key": "broken", "value": "${notint}"}]}
    gw = make_daemon(json_mapping(converter))
    body = {"name": "T-1", "string": 5, "double": 32, "float": "1.5", "int": "67", "integer": 7.0, "long": 2**40,
            "bool": "on", "boolean": False, "json": {"a": [1, 2]}, "notint": "seven"}
    answer = requests.post(gw.url("/data"), json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 1
    # ${kind} is absent: the type falls back to "default" and that is reported too
    assert [s["key"] for s in answer.json()["skipped"]] == ["deviceType", "broken"]
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    values = published(mqtt_subscriber, "v1/gateway/telemetry")[0]["T-1"][0]["values"]
    assert values == {"string": "5", "double": 32.0, "float": 1.5, "int": 67, "integer": 7, "long": 2**40,
                      "bool": True, "boolean": False, "json": {"a": [1, 2]}}
    assert published(mqtt_subscriber, "v1/gateway/connect") == [{"device": "T-1", "type": "default"}]


def test_path_variables_and_query(make_daemon, mqtt_subscriber):
    converter = {"deviceNameExpression": "dev-${id}", "deviceTypeExpression": "default", "attributes": [],
                 "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]}
    gw = make_daemon(json_mapping(converter, endpoint="/devices/{id}/data", methods=("GET", "POST")))
    assert requests.get(gw.url("/devices/42/data?t=1.5"), timeout=5).status_code == 200
    assert requests.post(gw.url("/devices/43/data?t=9"), json={"t": 2.5}, timeout=5).status_code == 200
    def both():
        got = {}
        for payload in published(mqtt_subscriber, "v1/gateway/telemetry"):
            for device, entries in payload.items():
                got[device] = entries[0]["values"]["t"]
        return got if len(got) == 2 else None
    assert wait_until(mqtt_subscriber, both, timeout=10) == {"dev-42": 1.5, "dev-43": 2.5}


def test_custom_converter_endpoint(make_daemon, mqtt_subscriber):
    gw = make_daemon(shipped_rest())
    assert requests.get(gw.url("/anon1?temp=21.5&hum=40"), timeout=5).status_code == 200
    assert requests.post(gw.url("/anon1"), data={"temp": "22.5", "hum": "41"}, timeout=5).status_code == 200
    assert requests.post(gw.url("/anon1"), json={"temp": 23.5, "hum": 42}, timeout=5).status_code == 200
    def three():
        got = [e["values"] for p in published(mqtt_subscriber, "v1/gateway/telemetry") for e in p.get("Device 2", [])]
        return got if len(got) == 3 else None
    got = wait_until(mqtt_subscriber, three, timeout=10)
    assert got == [{"temperature": 21.5, "humidity": 40.0}, {"temperature": 22.5, "humidity": 41.0},
                   {"temperature": 23.5, "humidity": 42.0}]
    assert {"Device 2": {"model": "Model2"}} in published(mqtt_subscriber, "v1/gateway/attributes")


def test_sigterm_stops_cleanly_with_exit_0(make_daemon):
    gw = make_daemon(shipped_rest())
    assert gw.stop() == 0
    assert "rest-gateway stopped" in gw.log_text()


def test_no_secrets_in_the_log(make_daemon, mqtt_subscriber):
    from tests.fixtures.daemon import ACCESS_TOKEN
    rest = shipped_rest()
    secret = "pw-7c1e-never-logged"
    rest["mapping"][0]["security"]["password"] = secret
    gw = make_daemon(rest)
    assert requests.post(gw.url("/my_devices"), json=SPEC_BODY, auth=("user", secret), timeout=5).status_code == 200
    requests.post(gw.url("/my_devices"), json=SPEC_BODY, auth=("user", secret + "x"), timeout=5)
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    gw.stop()
    text = gw.log_text()
    assert "REST connector listening" in text
    assert ACCESS_TOKEN not in text and secret not in text
