"""The gateway device's own telemetry as a stored event, published on ``v1/devices/me/telemetry``.

Device data is stored as records naming their device (see :mod:`gateway.northbound.records`); the
gateway's own telemetry (its statistics) goes through the same storage, in order with device data,
as a record of a third form that names no device::

    {"own":{"ts":1700000000000,"values":{"eventsProduced":3}}}

The packer recognises it by its first bytes and publishes the inner object as it is on the gateway
session's own telemetry topic, under the same rate limits as device telemetry.
"""
from __future__ import annotations

import json
from typing import Any

from gateway.northbound.records import encode

TOPIC_OWN_TELEMETRY = "v1/devices/me/telemetry"
OWN_PREFIX = b'{"own":'


def encode_own_telemetry(ts: int, values: dict[str, Any]) -> bytes:
    """The stored record of one telemetry entry of the gateway device; ValueError for non-JSON values."""
    if not values:
        raise ValueError("own telemetry needs at least one value")
    return OWN_PREFIX + encode({"ts": int(ts), "values": values}) + b"}"


def is_own(payload: Any) -> bool:
    """Whether a stored payload is the gateway's own telemetry (cheap: a prefix test)."""
    return isinstance(payload, bytes) and payload.startswith(OWN_PREFIX)


def own_entry(payload: bytes) -> tuple[bytes, int]:
    """(the publish payload ``{"ts":..,"values":{..}}``, its number of values); ValueError when malformed."""
    inner = payload[len(OWN_PREFIX):-1]
    if payload[-1:] != b"}":
        raise ValueError("own telemetry record is not closed")
    entry = json.loads(inner)
    values = entry.get("values") if isinstance(entry, dict) else None
    if not isinstance(values, dict) or not values or not isinstance(entry.get("ts"), int):
        raise ValueError("own telemetry must be {ts: int, values: non-empty object}")
    return inner, len(entry["values"])
