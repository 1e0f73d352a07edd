"""Flask views of the device API: ThingsBoard's status codes, bodies and headers, endpoint by endpoint."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from connectors.base import UplinkUnavailable
from connectors.rest.device_api.firmware import find_package, read_range
from connectors.rest.device_api.mailbox import Closed
from connectors.rest.device_api.payloads import (
    BadPayload,
    attributes_data,
    key_list,
    optional_object,
    parse_json,
    poll_timeout_ms,
    reply_data,
    telemetry_data,
)
from connectors.rest.device_api.provisioning import provision
from connectors.rest.device_api.registry import Device, RegistryFailure
from connectors.rest.device_api.service import DeviceApi
from connectors.rest.responses import error_response
from converters.model import ConvertedData

DEFAULT_POLL_TIMEOUT_MS = 60_000


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False), status=status,
                    mimetype="application/json")


def empty(status: int) -> Response:
    """A response with no body (ThingsBoard's 200 on success, 401, 408)."""
    return Response(b"", status=status)


def register_device_api(app: Flask, api: DeviceApi) -> None:
    """Add every device API route under ``api.config.base_path`` to ``app``."""
    views = _Views(api)
    base = api.config.base_path.rstrip("/")
    routes: list[tuple[str, str, Callable[..., Response], tuple[str, ...]]] = [
        ("/<token>/telemetry", "telemetry", views.telemetry, ("POST",)),
        ("/<token>/attributes", "attributes", views.attributes, ("GET", "POST")),
        ("/<token>/attributes/updates", "attribute_updates", views.attribute_updates, ("GET",)),
        ("/<token>/rpc", "rpc", views.rpc, ("GET", "POST")),
        ("/<token>/rpc/<request_id>", "rpc_reply", views.rpc_reply, ("POST",)),
        ("/<token>/claim", "claim", views.claim, ("POST",)),
        ("/<token>/firmware", "firmware", views.firmware, ("GET",)),
        ("/<token>/software", "software", views.firmware, ("GET",)),
        ("/provision", "provision", views.provision, ("POST",)),
    ]
    for rule, name, view, methods in routes:
        app.add_url_rule(base + rule, endpoint=f"device_api.{name}", view_func=_guarded(api, name, view),
                         methods=list(methods), provide_automatic_options=False)


def _guarded(api: DeviceApi, name: str, view: Callable[..., Response]) -> Callable[..., Response]:
    """Log an unexpected error by endpoint name: the app-wide handler would log the path, i.e. the token."""

    def guarded(**kwargs: Any) -> Response:
        try:
            return view(**kwargs)
        except HTTPException:
            raise
        except Exception:
            api.log.exception("device API: unexpected error on %s %s", request.method, name)
            return error_response(500, "internal error; see the gateway log")

    return guarded


class _Views:
    def __init__(self, api: DeviceApi) -> None:
        self.api = api
        self.cfg = api.config

    # ------------------------------------------------------------- helpers

    def _device(self, token: str) -> Device | None:
        device = self.api.registry.lookup(token)
        if device is None:
            self.api.count("unauthorized")
        return device

    def _bad(self, exc: Exception) -> Response:
        self.api.count("bad_requests")
        return error_response(400, str(exc))

    def _store(self, data: ConvertedData) -> Response:
        if data.is_empty():
            return empty(200)
        try:
            self.api.uplink.send([data])
        except UplinkUnavailable as exc:
            return error_response(503, f"data not accepted: {exc.reason}", {"Retry-After": str(exc.retry_after)})
        except ValueError as exc:
            return self._bad(exc)
        return empty(200)

    def _poll(self, wait: Callable[[], Response]) -> Response:
        if not self.api.slots.try_acquire():
            return error_response(503, f"too many requests are waiting (maxConcurrentPolls "
                                  f"{self.cfg.max_concurrent_polls}); retry later", {"Retry-After": "1"})
        try:
            return wait()
        except Closed:
            return error_response(503, "the gateway is stopping; retry later", {"Retry-After": "5"})
        finally:
            self.api.slots.release()

    def _timeout(self) -> float:
        return poll_timeout_ms(request.args.get("timeout"), self.cfg.max_poll_timeout_ms,
                               DEFAULT_POLL_TIMEOUT_MS) / 1000

    # ------------------------------------------------------------- uplink

    def telemetry(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        try:
            data = telemetry_data(request.get_data(cache=False), device.name, device.type)
        except BadPayload as exc:
            return self._bad(exc)
        self.api.count("telemetry_posts")
        return self._store(data)

    def attributes(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        if request.method == "GET":
            return self._request_attributes(device)
        try:
            data = attributes_data(request.get_data(cache=False), device.name, device.type)
        except BadPayload as exc:
            return self._bad(exc)
        self.api.count("attribute_posts")
        return self._store(data)

    def _request_attributes(self, device: Device) -> Response:
        client = key_list(request.args.getlist("clientKeys"))
        shared = key_list(request.args.getlist("sharedKeys"))
        if not client and not shared:
            return self._bad(BadPayload(
                "name the attributes: clientKeys=a,b and/or sharedKeys=c,d (the gateway API cannot ask "
                "ThingsBoard for all attributes of one scope)"))
        request_attributes = getattr(self.api.uplink, "request_attributes", None)
        if request_attributes is None:
            return error_response(501, "attribute requests are not available in this gateway build")
        timeout = self.cfg.attribute_request_timeout_ms / 1000
        result: dict[str, Any] = {}
        try:
            for scope, keys in (("client", client), ("shared", shared)):
                if keys:
                    values = request_attributes(device.name, scope == "client", keys, timeout)
                    if values is None:
                        raise TimeoutError(scope)
                    if values:
                        result[scope] = values
        except TimeoutError:
            return error_response(504, f"ThingsBoard did not answer the attribute request within "
                                  f"{timeout:g} s (attributeRequestTimeout)")
        except UplinkUnavailable as exc:
            return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
        return _json(200, result)

    def claim(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        try:
            body = optional_object(request.get_data(cache=False), "the claim request")
            secret = body.get("secretKey", "")
            duration = body.get("durationMs", 0)
            if not isinstance(secret, str):
                raise BadPayload("secretKey must be a string")
            if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
                raise BadPayload("durationMs must be a non-negative integer (milliseconds)")
        except BadPayload as exc:
            return self._bad(exc)
        try:
            self.api.uplink.claim(device.name, secret, duration)
        except UplinkUnavailable as exc:
            return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
        self.api.count("claims")
        return empty(200)

    def provision(self) -> Response:
        try:
            answer = provision(parse_json(request.get_data(cache=False)), self.cfg.provisioning,
                               self.api.registry)
        except BadPayload as exc:
            return self._bad(exc)
        except RegistryFailure as exc:
            self.api.log.error("device API: cannot store a provisioned device: %s", exc)
            return error_response(503, "the device registry cannot be written; retry later",
                                  {"Retry-After": "5"})
        if answer["status"] == "SUCCESS":
            self.api.count("provisioned")
            self.api.log.info("device API: provisioned a new device")
        return _json(200, answer)

    def firmware(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        title, version = request.args.get("title"), request.args.get("version")
        if not title or not version:
            return self._bad(BadPayload("title and version are required"))
        try:
            size = int(request.args.get("size") or 0)
            chunk = int(request.args.get("chunk") or 0)
            if size < 0 or chunk < 0:
                raise ValueError
        except ValueError:
            return self._bad(BadPayload("size and chunk must be non-negative integers"))
        package = find_package(self.cfg.firmware_path, title, version)
        if package is None:
            return error_response(404, f"no package {title!r} version {version!r}")
        data = read_range(package, size, chunk)
        self.api.count("firmware_downloads")
        return Response(data, status=200, mimetype="application/octet-stream", headers={
            "Content-Disposition": f"attachment;filename={package.filename}", "x-filename": package.filename})

    # ------------------------------------------------------------- downlink

    def attribute_updates(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        try:
            timeout = self._timeout()
        except BadPayload as exc:
            return self._bad(exc)

        def wait() -> Response:
            update = self.api.mailboxes.wait_attributes(device.name, timeout)
            return empty(408) if update is None else _json(200, update)

        return self._poll(wait)

    def rpc(self, token: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        if request.method == "POST":
            return self._client_rpc(device)
        try:
            timeout = self._timeout()
        except BadPayload as exc:
            return self._bad(exc)

        def wait() -> Response:
            rpc = self.api.mailboxes.wait_rpc(device.name, timeout)
            if rpc is None:
                return empty(408)
            return _json(200, {"id": rpc.request_id, "method": rpc.method, "params": rpc.params})

        return self._poll(wait)

    def rpc_reply(self, token: str, request_id: str) -> Response:
        device = self._device(token)
        if device is None:
            return empty(401)
        if not request_id.lstrip("-").isdigit():
            return self._bad(BadPayload(f"the RPC id {request_id!r} is not an integer"))
        rid = int(request_id)
        data = reply_data(request.get_data(cache=False))
        if not self.api.mailboxes.take_reply_slot(device.name, rid):
            return error_response(404, f"no RPC {rid} is waiting for a reply from this device")
        try:
            self.api.uplink.publish_rpc_reply(device.name, rid, data)
        except ValueError as exc:
            return self._bad(exc)
        return empty(200)

    def _client_rpc(self, device: Device) -> Response:
        try:
            body = parse_json(request.get_data(cache=False))
            if not isinstance(body, dict) or not isinstance(body.get("method"), str) or not body["method"]:
                raise BadPayload("a client-side RPC is {\"method\": \"...\", \"params\": ...}")
        except BadPayload as exc:
            return self._bad(exc)
        params = {"device": device.name, "params": body.get("params")}
        timeout = self.cfg.client_rpc_timeout_ms / 1000

        def wait() -> Response:
            self.api.count("client_rpc")
            try:
                answer = self.api.uplink.client_rpc(body["method"], params, timeout)
            except TimeoutError:
                self.api.count("client_rpc_timeouts")
                return _json(200, {"error": "timeout"})
            except ValueError as exc:
                return self._bad(exc)
            return _json(200, answer)

        return self._poll(wait)
