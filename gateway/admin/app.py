"""The admin WSGI app: ``/metrics``, ``/healthz``, ``/readyz`` and the status page ``/``.

A plain WSGI callable (no Flask): four fixed routes, GET and HEAD only, JSON errors like the
device ports'. With ``security`` configured, ``/metrics`` and ``/`` need basic auth (compared in
constant time); ``/healthz`` and ``/readyz`` stay open, as orchestrator probes rarely carry
credentials and their bodies only name checks and states.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from gateway.config.model import AdminConfig
from gateway.credentials import BasicCredentials

Probe = Callable[[], tuple[bool, dict[str, Any]]]
Answer = tuple[int, str, bytes]
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _json(status: int, body: dict[str, Any]) -> Answer:
    return status, "application/json", json.dumps(body, separators=(",", ":")).encode("utf-8")


def _error(status: int, message: str) -> Answer:
    return _json(status, {"error": message, "status": status})


class AdminApp:
    """Routes admin requests to the metrics exporter, the probes and the status page."""

    def __init__(self, config: AdminConfig, metrics: Callable[[], bytes], liveness: Probe, readiness: Probe,
                 status_page: Callable[[], str] | None, logger: logging.Logger) -> None:
        self.log = logger
        self._auth = (BasicCredentials(config.username, config.password)
                      if config.username else None)
        self._routes: dict[str, tuple[bool, Callable[[], Answer]]] = {
            "/metrics": (True, lambda: (200, PROMETHEUS_TYPE, metrics())),
            "/healthz": (False, lambda: self._probe(liveness)),
            "/readyz": (False, lambda: self._probe(readiness)),
        }
        if status_page is not None:
            self._routes["/"] = (True, lambda: (200, "text/html; charset=utf-8", status_page().encode("utf-8")))

    @staticmethod
    def _probe(probe: Probe) -> Answer:
        ok, body = probe()
        return _json(200 if ok else 503, body)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
        route = self._routes.get(path)
        if route is None:
            status, kind, body = _error(404, f"no admin endpoint at {path}; try " + ", ".join(self._routes))
        elif method not in ("GET", "HEAD"):
            status, kind, body = _error(405, f"method {method} is not allowed on {path}")
            headers.append(("Allow", "GET, HEAD"))
        elif route[0] and self._auth is not None and not self._auth.check(environ.get("HTTP_AUTHORIZATION")):
            status, kind, body = _error(401, "authentication required: wrong or missing Basic credentials")
            headers.append(("WWW-Authenticate", 'Basic realm="rest-gateway admin", charset="UTF-8"'))
        else:
            try:
                status, kind, body = route[1]()
            except Exception:
                self.log.exception("admin endpoint %s failed", path)
                status, kind, body = _error(500, "internal error; see the gateway log")
        headers += [("Content-Type", kind), ("Content-Length", str(len(body)))]
        start_response(f"{status} {_REASONS.get(status, '')}", headers)
        return [b""] if method == "HEAD" else [body]
