"""Device API in a real in-process gateway (sqlite, northbound, HTTP server) with a real broker as ThingsBoard:
telemetry shapes, attributes, 401/400/413, long polls for attribute updates and RPC, RPC replies."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from gateway.config.loader import load_config
from gateway.daemon import Daemon
from tests.fixtures.daemon import free_port

TOKEN = "A1_TEST_TOKEN"
DEVICE = "Device A"
MAPPING = {"endpoint": "/x", "converter": {"type": "json", "deviceNameExpression": "${n}"}}


class Gateway:
    """A whole gateway (the daemon's objects, in this process) on its own folder and port."""

    def __init__(self, folder: Path, broker: Any, device_api: dict[str, Any], **server: Any) -> None:
        self.folder = folder
        self.port = free_port()
        rest = {"host": "127.0.0.1", "port": self.port, "mapping": [MAPPING], "deviceApi": device_api, **server}
        (folder / "rest.json").write_text(json.dumps(rest), encoding="utf-8")
        general = {"thingsboard": {"host": "127.0.0.1", "port": broker.port, "protocol": broker.protocol,
                                   "security": {"accessToken": "gateway-token"}},
                   "storage": {"type": "sqlite", "data_file_path": str(folder / "data" / "gateway.db")},
                   "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}],
                   # a free admin port: the default 9100 is taken by any other gateway running on the machine
                   "admin": {"port": free_port()}}
        (folder / "gateway.yaml").write_text(yaml.safe_dump(general), encoding="utf-8")
        self.daemon: Daemon | None = None

    def start(self) -> Gateway:
        self.daemon = Daemon(load_config(str(self.folder / "gateway.yaml"), env={}))
        self.daemon.start()
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1{path}"

    def health(self) -> dict[str, Any]:
        assert self.daemon is not None
        return self.daemon.connectors[0].health()["device_api"]


def gateways(tmp_path: Path, broker: Any) -> Iterator[Callable[..., Gateway]]:
    """A factory of started gateways on the test's broker, all stopped at teardown (the fixture below)."""
    made: list[Gateway] = []

    def factory(device_api: dict[str, Any] | None = None, folder: str = "gw", **server: Any) -> Gateway:
        path = tmp_path / folder
        path.mkdir(exist_ok=True)
        api = device_api if device_api is not None else {
            "devices": [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "thermometer"}]}
        gateway = Gateway(path, broker, api, **server)
        made.append(gateway)
        return gateway.start()

    yield factory
    for gateway in made:
        gateway.stop()


make_gateway = pytest.fixture(name="make_gateway")(gateways)


def wait_for_topic(subscriber: Any, topic: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
    assert subscriber.wait_for(lambda m: sum(1 for t, _, _ in m if t == topic) >= count, timeout), \
        f"expected {count} message(s) on {topic}; got {subscriber.messages}"
    return subscriber.on(topic)


# ---------------------------------------------------------------- uplink

def test_three_telemetry_shapes_typed_as_sent(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    bodies = ['{"stringKey":"value1","booleanKey":true,"doubleKey":42.0,"longKey":73,'
              '"jsonKey":{"someNumber":42,"someArray":[1,2,3],"someNestedObject":{"key":"value"}}}',
              '{"ts":1451649600512,"values":{"temperature":"42","skipped":null}}',
              '[{"key1":"value1"},{"ts":1451649600999,"values":{"key2":true}}]']
    for body in bodies:
        answer = requests.post(gw.url(f"/{TOKEN}/telemetry"), data=body, timeout=5)
        assert (answer.status_code, answer.content) == (200, b"")
    messages = wait_for_topic(mqtt_subscriber, "v1/gateway/telemetry", 3)
    entries = [entry for body in messages for entry in body[DEVICE]]
    assert entries[0]["values"] == json.loads(bodies[0])
    assert isinstance(entries[0]["values"]["doubleKey"], float)
    assert isinstance(entries[0]["values"]["longKey"], int)
    assert entries[1] == {"ts": 1451649600512, "values": {"temperature": "42"}}  # no casting, null skipped
    assert entries[2]["values"] == {"key1": "value1"} and entries[2]["ts"] != 1451649600999
    assert entries[3] == {"ts": 1451649600999, "values": {"key2": True}}
    assert mqtt_subscriber.connects()[0] == {"device": DEVICE, "type": "thermometer"}


def test_ts_without_values_is_a_telemetry_key(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    assert requests.post(gw.url(f"/{TOKEN}/telemetry"), data='{"ts":1,"temp":2}', timeout=5).status_code == 200
    (message,) = wait_for_topic(mqtt_subscriber, "v1/gateway/telemetry")
    assert message[DEVICE][0]["values"] == {"ts": 1, "temp": 2}


def test_attributes_post(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    body = {"attribute1": "value1", "attribute2": True, "attribute3": 42.0, "attribute4": 73,
            "attribute5": {"someNumber": 42, "someArray": [1, 2, 3], "someNestedObject": {"key": "value"}}}
    answer = requests.post(gw.url(f"/{TOKEN}/attributes"), data=json.dumps(body), timeout=5)
    assert (answer.status_code, answer.content) == (200, b"")
    (message,) = wait_for_topic(mqtt_subscriber, "v1/gateway/attributes")
    assert message == {DEVICE: body}


@pytest.mark.parametrize("path", ["/telemetry", "/attributes", "/attributes/updates?timeout=10", "/rpc?timeout=10",
                                  "/rpc/1", "/claim", "/firmware?title=a&version=1"])
def test_unknown_token_is_401_with_empty_body(make_gateway, path: str) -> None:
    gw = make_gateway()
    method = "GET" if "timeout" in path or "firmware" in path else "POST"
    answer = requests.request(method, gw.url("/not-a-token" + path), data="{}", timeout=5)
    assert (answer.status_code, answer.content) == (401, b"")


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/telemetry", "{not json", "not valid JSON"),
    ("/telemetry", "", "empty"),
    ("/telemetry", '"abc"', "must be a JSON object"),
    ("/telemetry", '[{"a":1}, 5]', "item [1]"),
    ("/telemetry", '{"ts":"soon","values":{"a":1}}', "\"ts\""),
    ("/telemetry", '{"ts":1,"values":[1]}', "\"values\" must be a JSON object"),
    ("/telemetry", '{"a": NaN}', "NaN"),
    ("/attributes", "[1,2]", "attributes must be a JSON object"),
])
def test_bad_bodies_are_400_with_a_json_reason(make_gateway, mqtt_subscriber, path, body, message) -> None:
    gw = make_gateway()
    answer = requests.post(gw.url(f"/{TOKEN}{path}"), data=body, timeout=5)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_body_over_the_limit_is_413(make_gateway) -> None:
    gw = make_gateway(maxBodySize=1000)
    answer = requests.post(gw.url(f"/{TOKEN}/telemetry"), data=json.dumps({"k": "x" * 2000}), timeout=5)
    assert answer.status_code == 413


# ---------------------------------------------------------------- attribute update polls

def test_attribute_poll_times_out_with_408(make_gateway) -> None:
    gw = make_gateway()
    answer = requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=200"), timeout=5)
    assert (answer.status_code, answer.content) == (408, b"")


def test_waiting_poll_gets_the_update(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    result: list[requests.Response] = []
    poll = threading.Thread(target=lambda: result.append(
        requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=20000"), timeout=30)))
    poll.start()
    assert _wait(lambda: gw.health()["polls_waiting"] == 1)
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"fw_version": "2.0"}})
    poll.join(30)
    assert result[0].status_code == 200 and result[0].json() == {"fw_version": "2.0"}


def test_updates_between_polls_are_kept_and_merged_per_key(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    for data in ({"a": 1, "b": 1}, {"b": 2, "c": {"x": [1]}}, {"deleted": ["a"]}, {"other": None}):
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": data})
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": "Not ours", "data": {"z": 1}})
    assert _wait(lambda: gw.health()["attribute_updates_kept"] == 4)
    answer = requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=1000"), timeout=5)
    assert answer.json() == {"b": 2, "c": {"x": [1]}, "other": None, "deleted": ["a"]}
    again = requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=100"), timeout=5)
    assert again.status_code == 408  # taken once


def test_bad_timeout_is_400(make_gateway) -> None:
    gw = make_gateway()
    assert requests.get(gw.url(f"/{TOKEN}/rpc?timeout=soon"), timeout=5).status_code == 400


# ---------------------------------------------------------------- server-side RPC

def test_rpc_queued_polled_and_answered(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": 42, "method": "setGpio",
                                                                           "params": {"pin": "23", "value": 1}}})
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": 43, "method": "reboot"}})
    first = requests.get(gw.url(f"/{TOKEN}/rpc?timeout=5000"), timeout=10)
    assert first.status_code == 200
    assert first.json() == {"id": 42, "method": "setGpio", "params": {"pin": "23", "value": 1}}
    second = requests.get(gw.url(f"/{TOKEN}/rpc?timeout=5000"), timeout=10)
    assert second.json() == {"id": 43, "method": "reboot", "params": None}
    reply = requests.post(gw.url(f"/{TOKEN}/rpc/42"), data='{"result":"ok"}', timeout=5)
    assert (reply.status_code, reply.content) == (200, b"")
    raw = requests.post(gw.url(f"/{TOKEN}/rpc/43"), data="done", timeout=5)
    assert raw.status_code == 200
    replies = wait_for_topic(mqtt_subscriber, "v1/gateway/rpc", 4)
    assert {"device": DEVICE, "id": 42, "data": {"result": "ok"}} in replies
    assert {"device": DEVICE, "id": 43, "data": "done"} in replies
    assert requests.post(gw.url(f"/{TOKEN}/rpc/42"), data="{}", timeout=5).status_code == 404  # once only
    assert requests.post(gw.url(f"/{TOKEN}/rpc/99"), data="{}", timeout=5).status_code == 404
    assert requests.post(gw.url(f"/{TOKEN}/rpc/abc"), data="{}", timeout=5).status_code == 400


def test_rpc_for_a_device_without_token_gets_the_404_reply(make_gateway, mqtt_subscriber) -> None:
    make_gateway()
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "Stranger", "data": {"id": 5, "method": "m"}})
    replies = wait_for_topic(mqtt_subscriber, "v1/gateway/rpc", 2)
    assert replies[1]["id"] == 5 and replies[1]["data"]["code"] == 404


def test_queued_rpc_expires(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway({"devices": [{"accessToken": TOKEN, "deviceName": DEVICE}], "rpcTimeout": 200})
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": 1, "method": "m"}})
    assert _wait(lambda: gw.health()["rpc_queued"] == 1)
    threading.Event().wait(0.4)
    answer = requests.get(gw.url(f"/{TOKEN}/rpc?timeout=100"), timeout=5)
    assert answer.status_code == 408
    assert gw.health()["rpc_expired"] == 1


def test_stopping_releases_waiting_polls(make_gateway) -> None:
    gw = make_gateway()
    result: list[requests.Response] = []
    poll = threading.Thread(target=lambda: result.append(
        requests.get(gw.url(f"/{TOKEN}/rpc?timeout=60000"), timeout=30)))
    poll.start()
    assert _wait(lambda: gw.health()["polls_waiting"] == 1)
    gw.stop()
    poll.join(30)
    assert result[0].status_code == 503 and result[0].headers["Retry-After"]


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        event.wait(0.02)
    return condition()
