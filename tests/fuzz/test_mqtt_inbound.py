"""Malformed ThingsBoard→gateway messages on a real broker never stop the daemon's subscriber."""
from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from gateway.northbound.inbound import (
    AttributeResponse,
    AttributeUpdate,
    Malformed,
    OwnAttributesResponse,
    OwnAttributeUpdate,
    OwnRpcResponse,
    RpcRequest,
    parse_inbound,
)
from tests.e2e.test_uplink import json_mapping
from tests.fuzz.support import Outcomes, fuzz_settings

CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "v", "value": "${v}"}]}
TOPICS = ("v1/gateway/attributes", "v1/gateway/rpc", "v1/gateway/attributes/response",
          "v1/devices/me/rpc/response/1", "v1/devices/me/rpc/response/x")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80) | st.floats()
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
devices = st.one_of(st.just("dev-1"), st.text(max_size=10), json_values)
shaped = st.one_of(
    st.fixed_dictionaries({"device": devices, "data": json_values}),
    st.fixed_dictionaries({"device": devices, "data": st.fixed_dictionaries(
        {"id": json_values | st.integers(min_value=-(2 ** 70), max_value=2 ** 70), "method": json_values,
         "params": json_values})}),
    st.fixed_dictionaries({"device": devices, "id": json_values, "data": json_values}),
    json_values,
)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


payloads = st.one_of(
    shaped.map(encode),
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"device": "d", "data": {"id": 1e400, "method": "m"}}',
                     b'{"device": "d", "data": {"id": NaN, "method": "m"}}', b"\xff\xfe{}",
                     b'{"device": "d", "data": {"id": 1, "method": "m"}, "device": 5}',
                     b"[" * 10_000 + b"]" * 10_000, b'{"device":"' + b"x" * 200_000 + b'","data":{}}',
                     b'{"device": "d", "data": {"id": ' + b"9" * 5000 + b', "method": "m"}}']),
)


class Platform:
    """Plays ThingsBoard on the broker: publishes garbage, records every message as raw bytes.

    (The shared subscriber fixture parses what it receives, and it receives its own garbage.)
    """

    def __init__(self, broker: Any) -> None:
        protocol = mqtt.MQTTv5 if broker.protocol == "mqtt5" else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe([("v1/gateway/#", 1), ("v1/devices/me/#", 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "test platform did not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(), timeout)

    def rpc_replies(self, request_id: int) -> list[dict[str, Any]]:
        """The daemon's replies on v1/gateway/rpc to request ``request_id`` (our own publishes echo too)."""
        found = []
        for topic, payload in list(self.messages):
            if topic != "v1/gateway/rpc" or b'"code"' not in payload or len(payload) > 10_000:
                continue
            message = json.loads(payload)
            if isinstance(message, dict) and message.get("id") == request_id and isinstance(message.get("data"), dict):
                found.append(message)
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def platform(broker: Any) -> Iterator[Platform]:
    instance = Platform(broker)
    yield instance
    instance.close()


def test_garbage_on_downlink_topics_never_stops_the_subscriber(make_daemon, platform):
    gw = make_daemon(json_mapping(CONVERTER))
    assert platform.wait_for(lambda: any(t == "v1/devices/me/rpc/request/1" for t, _ in platform.messages), 10), \
        "the daemon never connected (it asks for its session limits first)"
    outcomes = Outcomes("MQTT downlink payloads (generated, daemon)")
    ids = itertools.count(10_000)

    @fuzz_settings(ci_examples=150)
    @given(topic=st.sampled_from(TOPICS), payload=payloads)
    def one(topic: str, payload: bytes) -> None:
        platform.publish(topic, payload)
        outcomes.add(topic)

    try:
        one()
        # after all that, an ordinary RPC still gets its (404-style: no serverSideRpc entry) reply
        request_id = next(ids)
        platform.publish("v1/gateway/rpc", encode({"device": "dev-after", "data": {
            "id": request_id, "method": "ping", "params": {}}}))
        assert platform.wait_for(lambda: bool(platform.rpc_replies(request_id)), 15), \
            f"no reply to a valid RPC after the garbage:\n{gw.log_text()[-3000:]}"
        (reply,) = platform.rpc_replies(request_id)
        assert reply["device"] == "dev-after" and reply["data"]["code"] == 404
        outcomes.add("valid RPC answered afterwards")
    finally:
        outcomes.write()
    assert gw.proc.poll() is None
    log = gw.stop() == 0 and gw.log_text()
    assert log and "Traceback" not in log, log[-3000:] if log else "the daemon did not stop cleanly"


PARSE_OUTCOMES = Outcomes("MQTT downlink payloads (generated, parse_inbound in-process)")


@pytest.fixture(scope="module", autouse=True)
def write_parse_outcomes() -> Iterator[None]:
    yield
    PARSE_OUTCOMES.write()


@fuzz_settings(ci_examples=500, soak_examples=50_000)
@given(topic=st.sampled_from(TOPICS + ("v1/devices/me/rpc/response/", "v1/other", "v1/devices/me/attributes",
                                       "v1/devices/me/attributes/response/3", "v1/devices/me/attributes/response/")),
       payload=payloads)
def test_parse_inbound_only_ever_raises_malformed(topic: str, payload: bytes) -> None:
    # regression: 10,000 levels of nesting raised RecursionError, logged as an error with a traceback
    try:
        event = parse_inbound(topic, payload)
    except Malformed:
        PARSE_OUTCOMES.add("Malformed (ignored)")
        return
    PARSE_OUTCOMES.add(type(event).__name__)
    assert isinstance(event, AttributeUpdate | RpcRequest | AttributeResponse | OwnRpcResponse | OwnAttributeUpdate
                      | OwnAttributesResponse)
    if isinstance(event, OwnAttributesResponse):
        assert isinstance(event.shared, dict) and isinstance(event.client, dict)
    if isinstance(event, RpcRequest):
        assert isinstance(event.request_id, int) and event.method and event.device
