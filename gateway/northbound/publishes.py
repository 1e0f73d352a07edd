"""One publish of the MQTT gateway API: its topics, what a publish and a dead letter are, and the
publishes that carry one message each (connect, disconnect, RPC replies, attribute requests), validated
as ThingsBoard checks them. Packing many stored events into publishes is :mod:`packing`'s job."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.northbound.own_telemetry import TOPIC_OWN_TELEMETRY
from gateway.northbound.records import check_name, encode, is_int

TOPIC_CONNECT = "v1/gateway/connect"
TOPIC_DISCONNECT = "v1/gateway/disconnect"
TOPIC_OWN_RPC_RESPONSE = "v1/devices/me/rpc/response/{}"
TOPIC_TELEMETRY = "v1/gateway/telemetry"
TOPIC_ATTRIBUTES = "v1/gateway/attributes"
TOPIC_RPC = "v1/gateway/rpc"
TOPIC_ATTRIBUTES_REQUEST = "v1/gateway/attributes/request"
TOPIC_CLAIM = "v1/gateway/claim"


@dataclass(slots=True)
class Publish:
    """One MQTT publish. Once it and every earlier publish are acked, events <= ``through_id`` are done."""

    topic: str
    payload: bytes
    datapoints: int = 0
    through_id: int | None = None
    first_id: int | None = None  # lowest event id with a part in this publish (for dead letters)

    @property
    def telemetry(self) -> bool:
        """Counts against the telemetry rate limits: device telemetry and the gateway's own."""
        return self.topic == TOPIC_TELEMETRY or self.topic == TOPIC_OWN_TELEMETRY


@dataclass(slots=True)
class DeadLetter:
    """Something that can never be delivered, moved aside with the reason."""

    event_id: int | None
    reason: str
    content: Any


# ---------------------------------------------------------------- validation

def validate_message(topic: str, message: Any) -> None:
    """Check an outgoing gateway message's structure; raises ValueError (ThingsBoard would disconnect)."""
    if topic == TOPIC_CONNECT:
        if not isinstance(message, dict):
            raise ValueError("connect must be an object")
        check_name(message.get("device"))
        if message.get("type") is not None and not isinstance(message["type"], str):
            raise ValueError("connect type must be a string")
    elif topic == TOPIC_DISCONNECT:  # ThingsBoard disconnects the gateway on a missing device name
        if not isinstance(message, dict) or set(message) != {"device"}:
            raise ValueError("disconnect must be {\"device\": name}")
        check_name(message.get("device"))
    elif topic == TOPIC_TELEMETRY:
        if not isinstance(message, dict) or not message:
            raise ValueError("telemetry must be a non-empty object")
        for name, entries in message.items():
            check_name(name)
            if not isinstance(entries, list):
                raise ValueError(f"telemetry of {name!r} must be an array")
            for entry in entries:
                if not isinstance(entry, dict):
                    raise ValueError(f"telemetry entry of {name!r} must be an object")
                if "ts" in entry and "values" in entry and (
                        not is_int(entry["ts"]) or not isinstance(entry["values"], dict)):
                    raise ValueError(f"telemetry entry of {name!r} needs ts: int and values: object")
    elif topic == TOPIC_ATTRIBUTES:
        if not isinstance(message, dict) or not message:
            raise ValueError("attributes must be a non-empty object")
        for name, values in message.items():
            check_name(name)
            if not isinstance(values, dict):
                raise ValueError(f"attributes of {name!r} must be an object")
    elif topic == TOPIC_RPC:
        if not isinstance(message, dict):
            raise ValueError("rpc reply must be an object")
        check_name(message.get("device"))
        if not is_int(message.get("id")):
            raise ValueError("rpc reply id must be an integer")
        if "data" not in message:
            raise ValueError("rpc reply needs data")
    elif topic == TOPIC_ATTRIBUTES_REQUEST:  # ThingsBoard disconnects on a missing id/device/client/key(s)
        if not isinstance(message, dict):
            raise ValueError("attribute request must be an object")
        check_name(message.get("device"))
        if not is_int(message.get("id")) or not isinstance(message.get("client"), bool):
            raise ValueError("attribute request needs id: int and client: bool")
        keys = message.get("keys", [message.get("key")])
        if ("key" in message) == ("keys" in message) or not isinstance(keys, list) or not keys or not all(
                isinstance(k, str) and k for k in keys):
            raise ValueError("attribute request needs exactly one of key (a name) or keys (names)")
    else:
        raise ValueError(f"unknown gateway topic {topic!r}")


def connect_publish(device: str, device_type: str) -> Publish:
    """``v1/gateway/connect`` for one device."""
    message = {"device": device, "type": device_type}
    validate_message(TOPIC_CONNECT, message)
    return Publish(TOPIC_CONNECT, encode(message))


def disconnect_publish(device: str) -> Publish:
    """``v1/gateway/disconnect`` for one device: ThingsBoard ends its session (no more RPC or updates)."""
    message = {"device": device}
    validate_message(TOPIC_DISCONNECT, message)
    return Publish(TOPIC_DISCONNECT, encode(message))


def own_rpc_reply_publish(request_id: int, data: Any) -> Publish:
    """The gateway device's answer to ThingsBoard's RPC ``request_id``; ValueError for non-JSON data."""
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
        raise ValueError("rpc request id must be a non-negative integer")
    try:
        payload = encode(data)
    except TypeError as exc:
        raise ValueError(f"rpc answer is not JSON: {exc}") from None
    return Publish(TOPIC_OWN_RPC_RESPONSE.format(request_id), payload)


def attribute_request_publish(request_id: int, device: str, client: bool, keys: Sequence[str]) -> Publish:
    """``v1/gateway/attributes/request`` for one scope: ``key`` for one name, ``keys`` for several."""
    message: dict[str, Any] = {"id": request_id, "device": device, "client": client}
    if len(keys) == 1:
        message["key"] = keys[0]
    else:
        message["keys"] = list(keys)
    validate_message(TOPIC_ATTRIBUTES_REQUEST, message)
    return Publish(TOPIC_ATTRIBUTES_REQUEST, encode(message))


def rpc_reply_publish(device: str, request_id: int, data: Any) -> Publish:
    """``v1/gateway/rpc`` reply; raises ValueError for a malformed reply or non-JSON data."""
    message = {"device": device, "id": request_id, "data": data}
    validate_message(TOPIC_RPC, message)
    return Publish(TOPIC_RPC, encode(message))


def claim_publish(device: str, secret_key: str, duration_ms: int) -> Publish:
    """``v1/gateway/claim`` for one device; raises ValueError for an empty device name."""
    if not device.strip():
        raise ValueError("device name must be a non-empty string")
    return Publish(TOPIC_CLAIM, encode({device: {"secretKey": secret_key, "durationMs": duration_ms}}))
