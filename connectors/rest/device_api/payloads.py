"""Pure parsing of device API bodies and parameters (ThingsBoard's rules), free of Flask and I/O."""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from connectors.rest.device_api.lenient_json import LenientError, parse_lenient
from connectors.rest.request_data import BadRequestData, InvalidJsonSyntax
from connectors.rest.request_data import parse_json as strict_json
from converters.model import ConvertedData


class BadPayload(ValueError):
    """The body or a parameter is not what the endpoint takes; answered 400 with this message."""


def parse_json(body: bytes) -> Any:
    """The body as JSON; BadPayload for an empty body, bad UTF-8 or bad JSON (NaN/Infinity included).

    Strict JSON first (the connector's own parser); on a syntax error, ThingsBoard's lenient reading
    (Gson), which the spec's own curl examples rely on once the shell has eaten their inner quotes.
    """
    if not body.strip():
        raise BadPayload("the request body is empty; a JSON document is required")
    try:
        return strict_json(body)
    except InvalidJsonSyntax as exc:
        try:
            return parse_lenient(exc.text)
        except LenientError:
            raise BadPayload(str(exc)) from None
    except BadRequestData as exc:
        raise BadPayload(str(exc)) from None


def _values(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """Keys with their values as sent; JSON null is skipped (as ThingsBoard does)."""
    for key in obj:
        if not key:
            raise BadPayload(f"{where}an empty key")
    return {key: value for key, value in obj.items() if value is not None}


def _ts(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise BadPayload(f"{where}\"ts\" is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise BadPayload(f"{where}\"ts\" must be milliseconds since the epoch (an integer), not {value!r}")


def telemetry_data(body: bytes, device: str, device_type: str, now_ms: int | None = None) -> ConvertedData:
    """A telemetry body in any of ThingsBoard's shapes: an object (server time), ``{"ts", "values"}``,
    or an array of either. The ts form needs both keys; values keep the type they were sent with."""
    document = parse_json(body)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    data = ConvertedData(device, device_type)
    items = document if isinstance(document, list) else [document]
    many = isinstance(document, list)
    for index, item in enumerate(items):
        where = f"item [{index}]: " if many else ""
        if not isinstance(item, dict):
            raise BadPayload(f"{where}telemetry must be a JSON object, {{\"ts\": ms, \"values\": {{...}}}}, "
                             f"or an array of them; got {type(item).__name__}")
        if "ts" in item and "values" in item:
            values = item["values"]
            if not isinstance(values, dict):
                raise BadPayload(f"{where}\"values\" must be a JSON object")
            data.add_telemetry(_values(values, where), _ts(item["ts"], where))
        else:
            data.add_telemetry(_values(item, where), now)
    return data


def attributes_data(body: bytes, device: str, device_type: str) -> ConvertedData:
    """Client-side attributes: the body must be a JSON object."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise BadPayload(f"attributes must be a JSON object, got {type(document).__name__}")
    return ConvertedData(device, device_type, attributes=_values(document, ""))


def poll_timeout_ms(raw: str | None, maximum: int, default: int) -> int:
    """A long poll's ``timeout`` parameter: absent or 0 means the default; capped at ``maximum``."""
    if raw is None or raw.strip() == "":
        return min(default, maximum)
    try:
        value = int(raw)
    except ValueError:
        raise BadPayload(f"timeout must be an integer number of milliseconds, not {raw!r}") from None
    if value < 0:
        raise BadPayload("timeout must not be negative")
    return min(value or default, maximum)


def key_list(raws: Iterable[str | None]) -> list[str]:
    """Every key of repeated parameters and comma lists inside them, in order, duplicates removed.

    ``["a,b", "", "c", "a"]`` → ``["a", "b", "c"]``. ThingsBoard's HTTP controller joins a repeated
    ``sharedKeys`` like a comma list (ThingsBoard's own Python client sends the firmware keys so); its
    CoAP transport keeps only the last one. Here both transports take the union.
    """
    keys: dict[str, None] = {}
    for raw in raws:
        for key in (raw or "").split(","):
            if key.strip():
                keys[key.strip()] = None
    return list(keys)


def reply_data(body: bytes) -> Any:
    """An RPC reply body: its JSON when it is JSON, else its text (ThingsBoard stores it raw)."""
    if not body.strip():
        return {}
    try:
        return strict_json(body)
    except BadRequestData:
        return body.decode("utf-8", errors="replace")


def optional_object(body: bytes, what: str) -> dict[str, Any]:
    """A body that may be empty (``{}``) or a JSON object."""
    if not body.strip():
        return {}
    document = parse_json(body)
    if not isinstance(document, dict):
        raise BadPayload(f"{what} must be a JSON object")
    return document
