"""Builds the REST connector's Flask app: one route per endpoint, JSON errors, a health route.

The mapping routes are also served by :class:`~connectors.rest.dispatch.MappingDispatch`, installed
as ``app.wsgi_app``, which calls their handlers without Flask's per-request machinery; the Flask
routes stay registered so routing, 404/405 answers and everything else are Flask's.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from connectors.rest.dispatch import ROUTE_KEY, MappingDispatch, RequestHandler
from connectors.rest.metrics import UNMATCHED, RequestMetrics
from connectors.rest.responses import error_response, json_response

RESERVED_PATHS = ("/health", "/metrics")
_PATH_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def flask_rule(endpoint: str) -> str:
    """The Flask rule of a rest.json endpoint: ``/devices/{id}/data`` → ``/devices/<id>/data``."""
    return _PATH_VARIABLE.sub(r"<\1>", endpoint)


def create_app(
    handlers: dict[str, dict[str, RequestHandler]],
    max_body_bytes: int,
    status: Callable[[], dict[str, Any]],
    logger: logging.Logger,
    metrics: RequestMetrics | None = None,
) -> Flask:
    """The WSGI app serving ``handlers`` (endpoint → method → handler) and ``GET /health``.

    With ``metrics``, every request is counted by endpoint (see :mod:`connectors.rest.metrics`).
    """
    app = Flask("rest-gateway")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.url_map.strict_slashes = True

    routes: dict[str, dict[str, RequestHandler]] = {}
    static_paths: dict[str, str] = {}
    labels: dict[str, str] = {}  # endpoint name → metrics label: the endpoint as configured
    rule_labels: dict[str, str] = {}  # Flask rule → the same label (requests Flask answers)
    for index, (endpoint, by_method) in enumerate(handlers.items()):
        allowed = sorted(by_method)
        name = f"mapping{index}"
        rule = flask_rule(endpoint)
        app.add_url_rule(
            rule,
            endpoint=name,
            view_func=_make_view(by_method, ", ".join(allowed)),
            methods=allowed,
            provide_automatic_options=False,
        )
        routes[name] = by_method
        labels[name] = rule_labels[rule] = endpoint
        if "<" not in rule:
            static_paths[name] = endpoint

    def health() -> Response:
        summary = status()
        return json_response(200 if summary.get("status") == "ok" else 503, summary)

    app.add_url_rule("/health", endpoint="health", view_func=health, methods=["GET"],
                     provide_automatic_options=False)

    def http_error_answer(exc: HTTPException, req: Request) -> Response:
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        if "Allow" in headers:  # werkzeug lists the methods in set order; make it stable
            headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body is larger than the limit of {max_body_bytes} bytes (maxBodySize)"
        elif exc.code == 404:
            message = f"no endpoint at {req.path}"
        elif exc.code == 405:
            message = f"method {req.method} is not allowed on {req.path}"
        return error_response(exc.code or 500, message, headers)

    def internal_error_answer(req: Request) -> Response:
        return error_response(500, "internal error; see the gateway log")

    if metrics is not None:
        @app.after_request
        def remember_route(response: Response) -> Response:
            rule = request.url_rule
            request.environ[ROUTE_KEY] = UNMATCHED if rule is None else rule_labels.get(rule.rule, rule.rule)
            return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return http_error_answer(exc, request)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return internal_error_answer(request)

    app.wsgi_app = MappingDispatch(  # type: ignore[method-assign]
        app.wsgi_app, app.url_map, routes, static_paths, max_body_bytes,
        http_error_answer, internal_error_answer, logger, metrics, labels,
    )
    return app


def _make_view(by_method: dict[str, RequestHandler], allow: str) -> Callable[..., Response]:
    def view(**path_vars: Any) -> Response:
        handler = by_method.get(request.method)
        if handler is None:  # HEAD is routed with GET by Flask, but only listed methods are served
            return error_response(405, f"method {request.method} is not allowed on {request.path}",
                                  {"Allow": allow})
        return handler(request, path_vars)

    return view
