"""JSON responses of the REST connector: every error names what was wrong."""
from __future__ import annotations

import json
from typing import Any

from flask import Response


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """``{"error": message, "status": status, ...extra}`` with the given status."""
    body: dict[str, Any] = {"error": message, "status": status}
    body.update(extra)
    return json_response(status, body, headers)
