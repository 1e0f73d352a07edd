"""The device API's HTTP front: Flask views mapping each operation's outcome to ThingsBoard's status
codes, bodies and headers (the operations themselves are in operations.py, shared with CoAP).

The two uplink posts, telemetry and attributes, are also served straight from WSGI by the REST
app's :class:`~connectors.rest.dispatch.MappingDispatch`, as the mapping endpoints are: a device
posting telemetry needs none of Flask's per-request machinery, which cost more than the post itself
(issue 15; bench/app_micro.py --device-api). Their Flask routes stay registered, so routing, 404,
405 and every other method and path are Flask's as before.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from connectors.rest.device_api.mailbox import Closed
from connectors.rest.device_api.operations import (
    DeviceOperations,
    NotFound,
    Unauthorized,
    Unavailable,
    UpstreamTimeout,
)
from connectors.rest.device_api.payloads import BadPayload, poll_timeout_ms
from connectors.rest.device_api.registry import Device
from connectors.rest.device_api.service import DeviceApi
from connectors.rest.dispatch import MappingDispatch, RequestHandler
from connectors.rest.responses import empty_response, error_response

DEFAULT_POLL_TIMEOUT_MS = 60_000


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False), status=status,
                    mimetype="application/json")


def empty(status: int) -> Response:
    """A response with no body (ThingsBoard's 200 on success, 401, 408)."""
    return empty_response(status)


def register_device_api(app: Flask, api: DeviceApi) -> None:
    """Add every device API route under ``api.config.base_path`` to ``app``.

    When ``app.wsgi_app`` is the REST app's :class:`MappingDispatch`, the telemetry and attributes
    posts are handed to it too, to be served without Flask's request machinery (same answers).
    """
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
    dispatch = app.wsgi_app
    if isinstance(dispatch, MappingDispatch):
        # labelled for the metrics as Flask's route is: by its rule. No other route can match
        # {base}/{token}/telemetry or /attributes (config checks refuse mapping endpoints under basePath,
        # and the device API's own routes differ in the last segment), so they are segment rules.
        rules = {"device_api.telemetry": base + "/<token>/telemetry",
                 "device_api.attributes": base + "/<token>/attributes"}
        dispatch.add_routes({"device_api.telemetry": {"POST": _direct(api, "telemetry", views.post_telemetry)},
                             "device_api.attributes": {"POST": _direct(api, "attributes", views.post_attributes)}},
                            rules, segment_rules=rules)


def _guarded(api: DeviceApi, name: str, view: Callable[..., Response]) -> Callable[..., Response]:
    """Log an unexpected error by endpoint name: the app-wide handler would log the path, i.e. the token."""

    def guarded(**kwargs: Any) -> Response:
        try:
            return view(**kwargs)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - every outcome becomes ThingsBoard's answer
            return _failure(api, name, request.method, exc)

    return guarded


def _direct(api: DeviceApi, name: str, post: Callable[[Request, str], Response]) -> RequestHandler:
    """``post`` as a :class:`MappingDispatch` handler, with the answers of :func:`_guarded`.

    An HTTPException (413 for a body over ``maxBodySize``) is left to the dispatcher, which answers
    it as the Flask app's error handler does.
    """

    def handle(req: Request, path_vars: dict[str, Any]) -> Response:
        try:
            return post(req, path_vars["token"])
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - every outcome becomes ThingsBoard's answer
            return _failure(api, name, req.method, exc)

    return handle


def _failure(api: DeviceApi, name: str, method: str, exc: Exception) -> Response:
    """ThingsBoard's answer to an operation that raised ``exc``; an unexpected error is logged."""
    if isinstance(exc, Unauthorized):
        return empty(401)
    if isinstance(exc, BadPayload):
        return error_response(400, str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, Unavailable):
        return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, UpstreamTimeout):
        return error_response(504, str(exc))
    api.log.error("device API: unexpected error on %s %s", method, name, exc_info=exc)
    return error_response(500, "internal error; see the gateway log")


class _Views:
    """Each view: authenticate, run the operation, answer. Outcomes other than success are exceptions
    that :func:`_guarded` turns into ThingsBoard's codes."""

    def __init__(self, api: DeviceApi) -> None:
        self.api = api
        self.cfg = api.config
        self.ops = DeviceOperations(api)

    def _body(self) -> bytes:
        return request.get_data(cache=False)

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
        try:
            return poll_timeout_ms(request.args.get("timeout"), self.cfg.max_poll_timeout_ms,
                                   DEFAULT_POLL_TIMEOUT_MS) / 1000
        except BadPayload as exc:
            raise self.ops.bad(str(exc)) from None

    # ------------------------------------------------------------- uplink

    def telemetry(self, token: str) -> Response:
        return self.post_telemetry(request, token)

    def post_telemetry(self, req: Request, token: str) -> Response:
        """POST telemetry: store it, answer 200 with no body (also called by the dispatcher)."""
        device = self.ops.device(token)
        self.ops.store([self.ops.telemetry(device, req.get_data(cache=False))])
        return empty(200)

    def attributes(self, token: str) -> Response:
        if request.method != "GET":
            return self.post_attributes(request, token)
        device = self.ops.device(token)
        return _json(200, self.ops.request_attributes(device, request.args.getlist("clientKeys"),
                                                      request.args.getlist("sharedKeys")))

    def post_attributes(self, req: Request, token: str) -> Response:
        """POST client attributes: store them, answer 200 with no body (also called by the dispatcher)."""
        device = self.ops.device(token)
        self.ops.store([self.ops.attributes(device, req.get_data(cache=False))])
        return empty(200)

    def claim(self, token: str) -> Response:
        self.ops.claim(self.ops.device(token), self._body())
        return empty(200)

    def provision(self) -> Response:
        return _json(200, self.ops.provision(self._body()))

    def firmware(self, token: str) -> Response:
        self.ops.device(token)
        args = request.args
        found = self.ops.firmware(args.get("title"), args.get("version"), args.get("size"), args.get("chunk"))
        filename = found.package.filename
        return Response(found.data, status=200, mimetype="application/octet-stream", headers={
            "Content-Disposition": f"attachment;filename={filename}", "x-filename": filename})

    # ------------------------------------------------------------- downlink

    def attribute_updates(self, token: str) -> Response:
        device = self.ops.device(token)
        timeout = self._timeout()

        def wait() -> Response:
            update = self.api.mailboxes.wait_attributes(device.name, timeout)
            return empty(408) if update is None else self._delivered(_json(200, update))

        return self._poll(wait)

    def rpc(self, token: str) -> Response:
        device = self.ops.device(token)
        if request.method == "POST":
            return self._client_rpc(device)
        timeout = self._timeout()

        def wait() -> Response:
            rpc = self.api.mailboxes.wait_rpc(device.name, timeout)
            if rpc is None:
                return empty(408)
            return self._delivered(_json(200, {"id": rpc.request_id, "method": rpc.method, "params": rpc.params}))

        return self._poll(wait)

    def _delivered(self, response: Response) -> Response:
        """A long poll's answer carrying an update or RPC, counted as bytes sent to the device."""
        self.api.sent_bytes(response.content_length or 0)
        return response

    def rpc_reply(self, token: str, request_id: str) -> Response:
        self.ops.rpc_reply(self.ops.device(token), request_id, self._body())
        return empty(200)

    def _client_rpc(self, device: Device) -> Response:
        rpc_request = self.ops.client_rpc_request(self._body())

        def wait() -> Response:
            try:
                return _json(200, self.ops.client_rpc(device, rpc_request))
            except UpstreamTimeout:
                return _json(200, {"error": "timeout"})  # ThingsBoard's own answer over HTTP

        return self._poll(wait)
