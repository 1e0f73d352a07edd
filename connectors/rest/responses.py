"""JSON responses of the REST connector: every error names what was wrong."""
from __future__ import annotations

import json
from typing import Any

from flask import Response

JSON_TYPE = "application/json"


class JsonResponse(Response):
    """A response whose headers are final when built (JSON body, Content-Length set, no Location).

    werkzeug's ``get_wsgi_headers`` copies the headers and fixes up Location, Content-Location
    and Content-Length on every answer; none of that applies here, so the headers are sent as
    they are (measured: ~5 µs CPU less per request, issue #5).
    """

    def get_wsgi_headers(self, environ: Any) -> Any:
        return self.headers


def empty_response(status: int) -> Response:
    """A response with no body and headers final when built: the same answer as ``Response(b"")``.

    Not for 204 or 304, whose Content-Length werkzeug would remove (the device API answers 200, 401
    and 408 with no body).
    """
    return JsonResponse(b"", status=status)


def json_bytes_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A JSON response from an already encoded body."""
    return JsonResponse(body, status=status, content_type=JSON_TYPE, headers=headers)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return JsonResponse(text.encode("utf-8"), status=status, content_type=JSON_TYPE, headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """``{"error": message, "status": status, ...extra}`` with the given status."""
    body: dict[str, Any] = {"error": message, "status": status}
    body.update(extra)
    return json_response(status, body, headers)


def configured_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A body as configured in rest.json (``response.successResponse`` and friends) or set by ThingsBoard.

    A string is sent as it is, as text/plain; any other JSON value (object, array, number, boolean,
    null) as compact JSON with application/json, never as a Python repr.
    """
    if isinstance(body, str):
        return JsonResponse(body.encode("utf-8"), status=status, content_type="text/plain; charset=utf-8",
                            headers=headers)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return JsonResponse(text.encode("utf-8"), status=status, content_type=JSON_TYPE, headers=headers)
