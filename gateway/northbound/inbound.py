"""Parsing ThingsBoard→gateway messages (attribute updates, RPC, limits) and spotting our own echoes."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.northbound.publishes import TOPIC_ATTRIBUTES, TOPIC_RPC

TOPIC_ATTRIBUTES_RESPONSE = "v1/gateway/attributes/response"
TOPIC_OWN_RPC_RESPONSE_PREFIX = "v1/devices/me/rpc/response/"
TOPIC_OWN_RPC_RESPONSE = TOPIC_OWN_RPC_RESPONSE_PREFIX + "+"
TOPIC_OWN_RPC_REQUEST_PREFIX = "v1/devices/me/rpc/request/"
TOPIC_OWN_RPC_REQUEST = TOPIC_OWN_RPC_REQUEST_PREFIX + "{}"
#: ThingsBoard's server-side RPCs to the gateway device itself (gateway_ping, gateway_restart, ...)
TOPIC_GATEWAY_RPC_REQUESTS = TOPIC_OWN_RPC_REQUEST_PREFIX + "+"
#: the gateway device's own attributes: shared attribute updates come in, client attributes go out
TOPIC_OWN_ATTRIBUTES = "v1/devices/me/attributes"
TOPIC_OWN_ATTRIBUTES_REQUEST = "v1/devices/me/attributes/request/{}"
TOPIC_OWN_ATTRIBUTES_RESPONSE_PREFIX = "v1/devices/me/attributes/response/"
#: subscribed only with remoteConfiguration on
OWN_ATTRIBUTE_SUBSCRIPTIONS = (TOPIC_OWN_ATTRIBUTES, TOPIC_OWN_ATTRIBUTES_RESPONSE_PREFIX + "+")
SUBSCRIPTIONS = (TOPIC_ATTRIBUTES, TOPIC_RPC, TOPIC_ATTRIBUTES_RESPONSE)


def is_subscribed(topic: str) -> bool:
    """True for every topic the gateway subscribes to (where a plain MQTT 3.1.1 broker echoes our publishes)."""
    return (topic in SUBSCRIPTIONS or topic == TOPIC_OWN_ATTRIBUTES or topic.startswith(TOPIC_OWN_RPC_REQUEST_PREFIX)
            or topic.startswith(TOPIC_OWN_RPC_RESPONSE_PREFIX)
            or topic.startswith(TOPIC_OWN_ATTRIBUTES_RESPONSE_PREFIX))


class Malformed(ValueError):
    """An inbound message we cannot use (bad JSON or wrong shape)."""


@dataclass(frozen=True, slots=True)
class AttributeUpdate:
    """A shared-attribute update (``deleted`` keys appear as ``{"deleted": [...]}`` in ``data``)."""

    device: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A server-side RPC for a sub-device."""

    device: str
    request_id: int
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class AttributeResponse:
    """ThingsBoard's answer to an attribute request, matched to the waiting request by id."""

    request_id: int
    device: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OwnRpcResponse:
    """The answer to one of the gateway's own client-side RPCs (e.g. getSessionLimits)."""

    request_id: int
    data: Any


@dataclass(frozen=True, slots=True)
class GatewayRpcRequest:
    """A server-side RPC to the gateway device itself; ``problem`` says why it cannot be run (answered 400)."""

    request_id: int
    method: str
    params: Any
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class OwnAttributeUpdate:
    """Shared attributes of the gateway device itself changed (``{"deleted": [...]}`` for removed ones)."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OwnAttributesResponse:
    """ThingsBoard's answer to the gateway device's own attribute request ``request_id``."""

    request_id: int
    shared: dict[str, Any]
    client: dict[str, Any]


Inbound = (AttributeUpdate | RpcRequest | AttributeResponse | OwnRpcResponse | GatewayRpcRequest
           | OwnAttributeUpdate | OwnAttributesResponse)


def _load(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None


def _device(message: dict[str, Any]) -> str:
    device = message.get("device")
    if not isinstance(device, str) or not device:
        raise Malformed("no device name")
    return device


def parse_inbound(topic: str, payload: bytes) -> Inbound:
    """Turn one received message into an event; raises Malformed."""
    if topic.startswith(TOPIC_OWN_RPC_RESPONSE_PREFIX):
        suffix = topic[len(TOPIC_OWN_RPC_RESPONSE_PREFIX):]
        if not suffix.isdigit():
            raise Malformed("rpc response id is not a number")
        return OwnRpcResponse(int(suffix), _load(payload))
    if topic.startswith(TOPIC_OWN_RPC_REQUEST_PREFIX):
        return _gateway_rpc(topic[len(TOPIC_OWN_RPC_REQUEST_PREFIX):], payload)
    message = _load(payload)
    if not isinstance(message, dict):
        raise Malformed("not an object")
    if topic == TOPIC_OWN_ATTRIBUTES:
        return OwnAttributeUpdate(message)
    if topic.startswith(TOPIC_OWN_ATTRIBUTES_RESPONSE_PREFIX):
        suffix = topic[len(TOPIC_OWN_ATTRIBUTES_RESPONSE_PREFIX):]
        shared, client = message.get("shared", {}), message.get("client", {})
        if not suffix.isdigit() or not isinstance(shared, dict) or not isinstance(client, dict):
            raise Malformed("own attribute response is not {client: object, shared: object} on a numbered topic")
        return OwnAttributesResponse(int(suffix), shared, client)
    if topic == TOPIC_ATTRIBUTES:
        data = message.get("data")
        if not isinstance(data, dict) or set(message) - {"device", "data"}:
            raise Malformed("attribute update is not {device, data: object}")
        return AttributeUpdate(_device(message), data)
    if topic == TOPIC_RPC:
        data = message.get("data")
        if not isinstance(data, dict) or "id" in message:
            raise Malformed("rpc request is not {device, data: {id, method, params}}")
        request_id, method = data.get("id"), data.get("method")
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise Malformed("rpc id is not an integer")
        if not isinstance(method, str) or not method:
            raise Malformed("rpc method missing")
        return RpcRequest(_device(message), request_id, method, data.get("params"))
    if topic == TOPIC_ATTRIBUTES_RESPONSE:
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise Malformed("attribute response id is not an integer")
        values = message.get("values")
        if values is None:
            values = {"value": message["value"]} if "value" in message else {}
        if not isinstance(values, dict):
            raise Malformed("attribute response values is not an object")
        return AttributeResponse(request_id, _device(message), values)
    raise Malformed(f"unexpected topic {topic!r}")


def _gateway_rpc(suffix: str, payload: bytes) -> GatewayRpcRequest:
    """``{"method": m, "params": p}`` on ``v1/devices/me/rpc/request/{id}``; a bad body still has an id to answer."""
    if not suffix.isdigit() or len(suffix) > 18:
        raise Malformed("rpc request id is not a number")
    request_id = int(suffix)
    try:
        message = _load(payload)
    except Malformed as exc:
        return GatewayRpcRequest(request_id, "", None, f"the request is {exc}")
    method = message.get("method") if isinstance(message, dict) else None
    if not isinstance(method, str) or not method:
        return GatewayRpcRequest(request_id, "", None, 'the request is not {"method": name, "params": ...}')
    return GatewayRpcRequest(request_id, method, message.get("params"))


class EchoFilter:
    """Remembers digests of our own recent publishes on subscribed topics (MQTT 3.1.1 has no no-local)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, topic: str, payload: bytes) -> None:
        """Note a payload we publish on ``topic``."""
        key = (topic, hash(payload))
        with self._lock:
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def is_own(self, topic: str, payload: bytes) -> bool:
        """True (once) when ``payload`` on ``topic`` is one we published."""
        key = (topic, hash(payload))
        with self._lock:
            return self._seen.pop(key, False) is None
