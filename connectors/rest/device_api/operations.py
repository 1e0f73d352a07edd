"""What each device API request does, free of any transport: the HTTP views and the CoAP resources
call these and turn the outcome (a value or one of the exceptions below) into their own codes.

Every operation is synchronous and may block (storage commits, waits for ThingsBoard); the HTTP
front calls them on its worker threads, the CoAP front on its executor threads.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import UplinkRateLimited, UplinkUnavailable
from connectors.rest.device_api.firmware import Package, find_package, read_range
from connectors.rest.device_api.payloads import (
    BadPayload,
    attributes_data,
    key_list,
    optional_object,
    parse_json,
    reply_data,
    telemetry_data,
)
from connectors.rest.device_api.provisioning import provision
from connectors.rest.device_api.registry import Device, RegistryFailure
from connectors.rest.device_api.service import DeviceApi
from converters.model import ConvertedData


class Unauthorized(Exception):
    """No device has this access token (HTTP 401, CoAP 4.01, both with no body)."""


class NotFound(Exception):
    """The thing asked for does not exist (HTTP 404, CoAP 4.04)."""


class Unavailable(Exception):
    """The gateway cannot serve this now; retry after ``retry_after`` seconds (HTTP 503, CoAP 5.03)."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class UpstreamTimeout(Exception):
    """ThingsBoard did not answer in time (HTTP 504, CoAP 5.04)."""


@dataclass(frozen=True, slots=True)
class FirmwareChunk:
    """A firmware/software download: the package and the bytes asked for."""

    package: Package
    data: bytes


class DeviceOperations:
    """The device API's requests over one :class:`DeviceApi` (registry, mailboxes, uplink)."""

    def __init__(self, api: DeviceApi) -> None:
        self.api = api
        self.cfg = api.config

    def device(self, token: str) -> Device:
        """The device with ``token``; :class:`Unauthorized` when none."""
        device = self.api.registry.lookup(token)
        if device is None:
            self.api.count("unauthorized")
            raise Unauthorized()
        return device

    def bad(self, message: str) -> BadPayload:
        """A counted :class:`BadPayload` to raise."""
        self.api.count("bad_requests")
        return BadPayload(message)

    # ------------------------------------------------------------- uplink

    def telemetry(self, device: Device, body: bytes) -> ConvertedData:
        """Parse a telemetry body (not yet stored: see :meth:`store`)."""
        try:
            data = telemetry_data(body, device.name, device.type)
        except BadPayload as exc:
            raise self.bad(str(exc)) from None
        self.api.count("telemetry_posts")
        return data

    def attributes(self, device: Device, body: bytes) -> ConvertedData:
        """Parse a client-attributes body (not yet stored: see :meth:`store`)."""
        try:
            data = attributes_data(body, device.name, device.type)
        except BadPayload as exc:
            raise self.bad(str(exc)) from None
        self.api.count("attribute_posts")
        return data

    def store(self, data: Sequence[ConvertedData]) -> None:
        """Store durably; returns once committed. Unavailable when storage is full or failing."""
        data = [item for item in data if not item.is_empty()]
        if not data:
            return
        try:
            self.api.uplink.send(data)
        except UplinkUnavailable as exc:
            raise Unavailable(f"data not accepted: {exc.reason}", exc.retry_after) from None
        except ValueError as exc:
            raise self.bad(str(exc)) from None

    def store_each(self, data: Sequence[ConvertedData]) -> list[Unavailable | None]:
        """Store the posts ``data`` (one device API request each) in one commit; each takes one token of
        the gateway-wide rate limit, as one HTTP request does. The outcome of each: None once stored
        (or nothing to store), Unavailable for a post past the limit (not stored). Raises Unavailable
        when storage is full or failing (nothing stored), BadPayload when one cannot be encoded."""
        outcomes: list[Unavailable | None] = [None] * len(data)
        places = [place for place, item in enumerate(data) if not item.is_empty()]
        if not places:
            return outcomes
        try:
            refused = self.api.uplink.send_each([data[place] for place in places])
        except UplinkUnavailable as exc:
            raise Unavailable(f"data not accepted: {exc.reason}", exc.retry_after) from None
        except ValueError as exc:
            raise self.bad(str(exc)) from None
        for place, limited in zip(places, refused, strict=True):
            if limited is not None:
                outcomes[place] = _refused(limited)
        return outcomes

    def request_attributes(self, device: Device, client_keys: Iterable[str | None],
                           shared_keys: Iterable[str | None]) -> dict[str, Any]:
        """``{"client": {...}, "shared": {...}}`` from ThingsBoard (sections only when not empty)."""
        client, shared = key_list(client_keys), key_list(shared_keys)
        if not client and not shared:
            raise self.bad("name the attributes: clientKeys=a,b and/or sharedKeys=c,d (the gateway API cannot "
                           "ask ThingsBoard for all attributes of one scope)")
        result: dict[str, Any] = {}
        for scope, keys in (("client", client), ("shared", shared)):
            if keys:
                values = self.fetch_attributes(device, scope == "client", keys)
                if values:
                    result[scope] = values
        return result

    def fetch_attributes(self, device: Device, client: bool, keys: list[str]) -> dict[str, Any]:
        """One scope's ``keys`` from ThingsBoard: UpstreamTimeout, Unavailable."""
        request_attributes = getattr(self.api.uplink, "request_attributes", None)
        if request_attributes is None:
            raise Unavailable("attribute requests are not available in this gateway build", 60)
        timeout = self.cfg.attribute_request_timeout_ms / 1000
        try:
            values = request_attributes(device.name, client, keys, timeout)
        except UplinkUnavailable as exc:
            raise Unavailable(exc.reason, exc.retry_after) from None
        if values is None:
            raise UpstreamTimeout(f"ThingsBoard did not answer the attribute request within {timeout:g} s "
                                  f"(attributeRequestTimeout)")
        return values

    def claim(self, device: Device, body: bytes) -> None:
        """Send claiming info (queued for ThingsBoard, not a claim result)."""
        try:
            request = optional_object(body, "the claim request")
        except BadPayload as exc:
            raise self.bad(str(exc)) from None
        secret = request.get("secretKey", "")
        duration = request.get("durationMs", 0)
        if not isinstance(secret, str):
            raise self.bad("secretKey must be a string")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise self.bad("durationMs must be a non-negative integer (milliseconds)")
        try:
            self.api.uplink.claim(device.name, secret, duration)
        except UplinkUnavailable as exc:
            raise Unavailable(exc.reason, exc.retry_after) from None
        self.api.count("claims")

    def provision(self, body: bytes) -> dict[str, Any]:
        """ThingsBoard's provisioning answer (``status`` SUCCESS, NOT_FOUND or FAILURE)."""
        try:
            answer = provision(parse_json(body), self.cfg.provisioning, self.api.registry)
        except BadPayload as exc:
            raise self.bad(str(exc)) from None
        except RegistryFailure as exc:
            self.api.log.error("device API: cannot store a provisioned device: %s", exc)
            raise Unavailable("the device registry cannot be written; retry later") from None
        if answer["status"] == "SUCCESS":
            self.api.count("provisioned")
            self.api.log.info("device API: provisioned a new device")
        return answer

    def firmware(self, title: str | None, version: str | None, size: str | None,
                 chunk: str | None) -> FirmwareChunk:
        """A package's bytes (all, or ThingsBoard's ``size``/``chunk`` slice); NotFound when absent."""
        if not title or not version:
            raise self.bad("title and version are required")
        try:
            size_value, chunk_value = int(size or 0), int(chunk or 0)
            if size_value < 0 or chunk_value < 0:
                raise ValueError
        except ValueError:
            raise self.bad("size and chunk must be non-negative integers") from None
        package = find_package(self.cfg.firmware_path, title, version)
        if package is None:
            raise NotFound(f"no package {title!r} version {version!r}")
        data = read_range(package, size_value, chunk_value)
        self.api.count("firmware_downloads")
        return FirmwareChunk(package, data)

    # ------------------------------------------------------------- RPC

    def rpc_reply(self, device: Device, request_id: str, body: bytes, object_only: bool = False) -> None:
        """Answer a delivered server-side RPC; ``object_only``: the reply must be a JSON object."""
        if not request_id.lstrip("-").isdigit():
            raise self.bad(f"the RPC id {request_id!r} is not an integer")
        rid = int(request_id)
        data = reply_data(body)
        if object_only and not isinstance(data, dict):
            raise self.bad("the RPC reply must be a JSON object")
        if not self.api.mailboxes.take_reply_slot(device.name, rid):
            raise NotFound(f"no RPC {rid} is waiting for a reply from this device")
        try:
            self.api.uplink.publish_rpc_reply(device.name, rid, data)
        except ValueError as exc:
            raise self.bad(str(exc)) from None

    def client_rpc_request(self, body: bytes) -> dict[str, Any]:
        """Check a client-side RPC body: ``{"method": "...", "params": ...}``."""
        try:
            request = parse_json(body)
        except BadPayload as exc:
            raise self.bad(str(exc)) from None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str) or not request["method"]:
            raise self.bad("a client-side RPC is {\"method\": \"...\", \"params\": ...}")
        return request

    def client_rpc(self, device: Device, request: dict[str, Any]) -> Any:
        """ThingsBoard's answer to the device's client-side RPC; UpstreamTimeout after clientRpcTimeout."""
        params = {"device": device.name, "params": request.get("params")}
        timeout = self.cfg.client_rpc_timeout_ms / 1000
        self.api.count("client_rpc")
        try:
            return self.api.uplink.client_rpc(request["method"], params, timeout)
        except TimeoutError:
            self.api.count("client_rpc_timeouts")
            raise UpstreamTimeout(f"ThingsBoard did not answer within {timeout:g} s (clientRpcTimeout)") from None
        except ValueError as exc:
            raise self.bad(str(exc)) from None


def _refused(exc: UplinkRateLimited) -> Unavailable:
    """The device API's answer to data past the gateway-wide limit: as storage's (503, 5.03), Retry-After."""
    return Unavailable(f"data not accepted: {exc.reason}", exc.retry_after)
