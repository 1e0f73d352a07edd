"""``attributeRequests`` endpoints: a device asks the gateway for its attributes, ThingsBoard answers."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from flask import Response
from werkzeug.wrappers import Request

from connectors.base import Uplink, UplinkUnavailable
from connectors.rest.model import Security, normalise_methods
from connectors.rest.request_data import BadRequestData, read_request
from connectors.rest.responses import error_response, json_response
from connectors.rest.security import BasicAuthenticator
from converters.expressions import MissingValue, Template, compile_template

DEFAULT_TIMEOUT = 10.0
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Basic realm="rest-gateway", charset="UTF-8"'}


def request_methods(entry: dict[str, Any]) -> tuple[str, ...]:
    """The methods an attributeRequests endpoint serves (``HTTPMethods``/``HTTPMethod``; default POST)."""
    return normalise_methods(entry, ("HTTPMethods", "HTTPMethod"), ()) or ("POST",)


@dataclass(frozen=True, slots=True)
class AttributeRequestEntry:
    """One ``attributeRequests`` entry, compiled."""

    endpoint: str
    methods: tuple[str, ...]
    client: bool
    timeout: float
    security: Security
    device_name: Template
    attribute_names: Template

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> AttributeRequestEntry:
        security = entry.get("security") if isinstance(entry.get("security"), dict) else {}
        timeout = entry.get("timeout", DEFAULT_TIMEOUT)
        return cls(
            endpoint=str(entry.get("endpoint", "")),
            methods=request_methods(entry),
            client=str(entry.get("type", "shared")).lower() == "client",
            timeout=float(timeout) if isinstance(timeout, int | float) and timeout > 0 else DEFAULT_TIMEOUT,
            security=Security(type=str(security.get("type", "anonymous")).lower(),
                              username=str(security.get("username", "")),
                              password=str(security.get("password", ""))),
            device_name=compile_template(str(entry.get("deviceNameExpression", ""))),
            attribute_names=compile_template(str(entry.get("attributeNameExpression", ""))),
        )


def _names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def attribute_keys(template: Template, data: Any) -> list[str]:
    """The attribute names a request asks for.

    Each placeholder gives one name, a comma-separated list of names or a JSON array of names
    (``${attribute}${attribute1}`` asks for two); literal text between placeholders that is only
    commas and spaces separates them. Other text is rendered as a whole and split on commas.
    Raises MissingValue when a placeholder is absent.
    """
    if template.is_single:
        return _names(template.render(data))
    text = template.text
    for expr in template.placeholders:
        text = text.replace("${" + expr + "}", "", 1)
    if template.placeholders and not text.replace(",", "").strip():
        keys: list[str] = []
        for expr in template.placeholders:
            keys += _names(compile_template("${" + expr + "}").render(data))
        return list(dict.fromkeys(keys))
    return list(dict.fromkeys(_names(template.render(data))))


class AttributeRequestHandler:
    """Serves one attributeRequests endpoint; at most ``slots`` requests wait for ThingsBoard at once."""

    def __init__(self, entry: AttributeRequestEntry, uplink: Uplink, slots: threading.BoundedSemaphore,
                 logger: logging.Logger) -> None:
        self.entry = entry
        self.uplink = uplink
        self.slots = slots
        self.log = logger
        self._auth = BasicAuthenticator(entry.security) if entry.security.type == "basic" else None

    def __call__(self, request: Request, path_vars: dict[str, Any]) -> Response:
        entry = self.entry
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            return error_response(401, "authentication required: wrong or missing Basic credentials",
                                  UNAUTHORIZED_HEADERS)
        try:
            request_input = read_request(request.get_data(cache=False), request.content_type or "",
                                         request.query_string, path_vars, False)
        except BadRequestData as exc:
            return error_response(400, str(exc))
        if len(request_input.messages) != 1:
            return error_response(400, "an attribute request is one JSON object (or query parameters)")
        data = request_input.messages[0]
        try:
            device = entry.device_name.render(data)
            keys = attribute_keys(entry.attribute_names, data)
        except MissingValue as exc:
            return error_response(400, f"cannot tell which attributes to fetch: {exc}")
        if not isinstance(device, str | int) or not str(device).strip():
            return error_response(400, "the device name is empty")
        if not keys:
            return error_response(400, "no attribute names in the request")
        if not self.slots.acquire(blocking=False):
            return error_response(503, "too many attribute requests are waiting for ThingsBoard; retry later",
                                  {"Retry-After": "1"})
        try:
            values = self.uplink.request_attributes(str(device), entry.client, keys, entry.timeout)
        except UplinkUnavailable as exc:
            return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
        except ValueError as exc:
            return error_response(400, f"invalid attribute request: {exc}")
        finally:
            self.slots.release()
        if values is None:
            self.log.warning("ThingsBoard did not answer the attribute request of device %s (%s) within %g s",
                             device, ", ".join(keys), entry.timeout)
            return error_response(504, f"ThingsBoard did not answer within {entry.timeout:g} s")
        return json_response(200, values)
