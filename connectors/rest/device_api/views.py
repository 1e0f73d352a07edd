"""The device API's HTTP front: Flask views mapping each operation's outcome to ThingsBoard's status
codes, bodies and headers (the operations themselves are in operations.py, shared with CoAP)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

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
from connectors.rest.responses import error_response

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
        except Unauthorized:
            return empty(401)
        except BadPayload as exc:
            return error_response(400, str(exc))
        except NotFound as exc:
            return error_response(404, str(exc))
        except Unavailable as exc:
            return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
        except UpstreamTimeout as exc:
            return error_response(504, str(exc))
        except Exception:
            api.log.exception("device API: unexpected error on %s %s", request.method, name)
            return error_response(500, "internal error; see the gateway log")

    return guarded


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
        device = self.ops.device(token)
        self.ops.store([self.ops.telemetry(device, self._body())])
        return empty(200)

    def attributes(self, token: str) -> Response:
        device = self.ops.device(token)
        if request.method == "GET":
            return _json(200, self.ops.request_attributes(device, request.args.getlist("clientKeys"),
                                                          request.args.getlist("sharedKeys")))
        self.ops.store([self.ops.attributes(device, self._body())])
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
