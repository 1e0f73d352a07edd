"""Builds the REST connector's Flask app: one route per endpoint, JSON errors, a health route."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from connectors.rest.handler import MappingHandler
from connectors.rest.responses import error_response, json_response

RESERVED_PATHS = ("/health", "/metrics")
_PATH_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def flask_rule(endpoint: str) -> str:
    """The Flask rule of a rest.json endpoint: ``/devices/{id}/data`` → ``/devices/<id>/data``."""
    return _PATH_VARIABLE.sub(r"<\1>", endpoint)


def create_app(
    handlers: dict[str, dict[str, MappingHandler]],
    max_body_bytes: int,
    status: Callable[[], dict[str, Any]],
    logger: logging.Logger,
) -> Flask:
    """The WSGI app serving ``handlers`` (endpoint → method → handler) and ``GET /health``."""
    app = Flask("rest-gateway")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.url_map.strict_slashes = True

    for index, (endpoint, by_method) in enumerate(handlers.items()):
        allowed = sorted(by_method)
        app.add_url_rule(
            flask_rule(endpoint),
            endpoint=f"mapping{index}",
            view_func=_make_view(by_method, ", ".join(allowed)),
            methods=allowed,
            provide_automatic_options=False,
        )

    def health() -> Response:
        summary = status()
        return json_response(200 if summary.get("status") == "ok" else 503, summary)

    app.add_url_rule("/health", endpoint="health", view_func=health, methods=["GET"],
                     provide_automatic_options=False)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body is larger than the limit of {max_body_bytes} bytes (maxBodySize)"
        elif exc.code == 404:
            message = f"no endpoint at {request.path}"
        elif exc.code == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        return error_response(exc.code or 500, message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the gateway log")

    return app


def _make_view(by_method: dict[str, MappingHandler], allow: str) -> Callable[..., Response]:
    def view(**path_vars: Any) -> Response:
        handler = by_method.get(request.method)
        if handler is None:  # HEAD is routed with GET by Flask, but only listed methods are served
            return error_response(405, f"method {request.method} is not allowed on {request.path}",
                                  {"Allow": allow})
        return handler(request, path_vars)

    return view
