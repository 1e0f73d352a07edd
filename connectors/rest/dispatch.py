"""Serves the mapping endpoints straight from WSGI, in front of Flask, because Flask's per-request cost is most of ours.

Measured in-process (bench/app_micro.py, issue #5): a bare Flask app that only reads the body costs
~48 µs CPU per request, nearly all of it Flask's machinery — request context push/pop, URL adapter
``bind_to_environ``, blinker signals, ``preprocess_request``/``process_response``, teardown. The
mapping endpoints use none of it: their handlers only need a werkzeug ``Request`` and return a
``Response``. So :class:`MappingDispatch` wraps ``app.wsgi_app`` (the idiomatic Flask middleware
hook) and, for a request whose path and method a mapping handler serves, calls the handler
directly. Everything else — other paths, a method the endpoint does not serve (405 with
``Allow``), HEAD, redirects for slashes, ``/health``, the device API's other requests — falls
through to Flask unchanged, so Flask stays the single source of routing and error answers. The
device API's telemetry and attributes posts are added the same way (:meth:`MappingDispatch.add_routes`).

Which requests take the direct path is decided by asking Flask's own URL map, so the route chosen
is always the one Flask would choose:

* endpoints without path variables: at the first request, each (path, method) of a mapping is
  matched against the full URL map once; those that resolve to that mapping go into a dict keyed
  by the raw ``PATH_INFO`` and method — one dict lookup per request;
* endpoints with path variables: the URL map is matched per request (``Map.bind`` + ``match``,
  without the rest of Flask's machinery) and a match on a mapping endpoint calls its handler.

Errors keep Flask's answers: an ``HTTPException`` while handling (413 for a body over
``maxBodySize``, a client disconnect) gets the same JSON body as the Flask error handler, and any
other exception is logged with its traceback and answered with the same 500 JSON.

With a :class:`~connectors.rest.metrics.RequestMetrics`, every request is counted here: the
direct path labels it with its configured endpoint; a request Flask answers is labelled by the
route Flask matched (``ROUTE_KEY``, set by the app's ``after_request``) or ``(unmatched)``.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any, Protocol

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from connectors.rest.metrics import UNMATCHED, RequestMetrics

#: a rule whose one variable, of the default converter, is a whole path segment: /api/v1/<token>/telemetry
_SEGMENT_RULE = re.compile(r"(?P<prefix>[^<>]*/)<(?P<var>[A-Za-z_][A-Za-z0-9_]*)>(?P<suffix>/[^<>]*)")

#: environ key where the Flask app leaves the label of the route it served (for the metrics)
ROUTE_KEY = "rest_gateway.route"
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestHandler(Protocol):
    """What a mapping or attributeRequests handler looks like to the dispatcher."""

    def __call__(self, request: Request, path_vars: dict[str, Any]) -> Response: ...


ErrorAnswer = Callable[[HTTPException, Request], Response]
InternalError = Callable[[Request], Response]


class MappingDispatch:
    """WSGI middleware: mapping requests go straight to their handler, the rest to ``app`` (Flask).

    ``routes`` maps a Flask endpoint name (as registered on ``url_map``) to that endpoint's
    handlers by method. ``http_error`` and ``internal_error`` build the same answers as the Flask
    app's error handlers; ``internal_error`` is called after the traceback has been logged.
    """

    def __init__(
        self,
        app: WsgiApp,
        url_map: Map,
        routes: dict[str, dict[str, RequestHandler]],
        static_paths: dict[str, str],
        max_body_bytes: int,
        http_error: ErrorAnswer,
        internal_error: InternalError,
        logger: logging.Logger,
        metrics: RequestMetrics | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """``static_paths`` maps the endpoint name of each mapping without path variables to its path.

        ``labels`` maps an endpoint name to its metrics label (the endpoint as configured).
        """
        self.app = app
        self.url_map = url_map
        self.routes = dict(routes)
        self._static_paths = static_paths
        self._dynamic = any(name not in static_paths for name in routes)
        self._http_error = http_error
        self._internal_error = internal_error
        self.log = logger
        self._request_class = type("MappingRequest", (Request,), {"max_content_length": max_body_bytes})
        self._table: dict[tuple[str, str], tuple[RequestHandler, str]] | None = None
        self._table_lock = threading.Lock()
        self.metrics = metrics
        self._labels = labels or {}
        # (endpoint name, prefix, variable, suffix) of segment rules: given, then checked at the first request
        self._segment_candidates: list[tuple[str, str, str, str]] = []
        # (prefix, suffix, method, handler, variable, label) of the checked segment rules
        self._segments: list[tuple[str, str, str, RequestHandler, str, str]] = []

    def add_routes(self, routes: dict[str, dict[str, RequestHandler]], labels: dict[str, str],
                   segment_rules: dict[str, str] | None = None) -> None:
        """Serve more routes of the URL map directly (the device API's posts), before the first request.

        ``routes`` maps each endpoint name, as registered on the URL map, to its handlers by method;
        they are matched per request, like mapping endpoints with path variables. ``labels`` names
        them for the metrics.

        ``segment_rules`` maps some of those names to their rule when it is ``prefix<var>suffix``,
        ``var`` one whole path segment of the default converter, and the caller knows that no other
        route can match a path of that shape (the device API: config checks refuse mapping endpoints
        under its basePath). Such a path is then recognised by its prefix and suffix, without the
        URL map (measured on a loaded machine: a match cost 27 µs, a whole mapping post ~105 µs); the
        first request checks each against the URL map once.
        """
        self.routes.update(routes)
        self._labels.update(labels)
        self._dynamic = bool(routes) or self._dynamic
        for name, rule in (segment_rules or {}).items():
            found = _SEGMENT_RULE.fullmatch(rule)
            if found is not None:
                self._segment_candidates.append((name, found["prefix"], found["var"], found["suffix"]))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        metrics = self.metrics
        started = perf_counter() if metrics is not None else 0.0
        table = self._table if self._table is not None else self._build_table()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        entry = table.get((path, method))
        path_vars: dict[str, Any] = {}
        if entry is None:
            found = self._match_segment(path, method) if self._segments else None
            if found is None and self._dynamic:
                found = self._match(path, method)
            if found is None:
                if metrics is None:
                    return self.app(environ, start_response)
                return self._to_flask(environ, start_response, method, started)
            handler, label, path_vars = found
        else:
            handler, label = entry
        request = self._request_class(environ)
        try:
            response = handler(request, path_vars)
        except HTTPException as exc:
            response = self._http_error(exc, request)
        except Exception:
            self.log.exception("unexpected error on %s %s", request.method, request.path)
            response = self._internal_error(request)
        if metrics is not None:
            metrics.observe(label, method, response.status_code, perf_counter() - started)
        return response(environ, start_response)

    def _to_flask(self, environ: dict[str, Any], start_response: Callable[..., Any], method: str,
                  started: float) -> Iterable[bytes]:
        """Let Flask answer, and count the answer under the route Flask served (or ``(unmatched)``)."""
        status = [0]

        def capture(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = int(line[:3])
            return start_response(line, headers, exc_info)

        result = self.app(environ, capture)
        assert self.metrics is not None
        self.metrics.observe(environ.get(ROUTE_KEY, UNMATCHED), method, status[0], perf_counter() - started)
        return result

    def _match(self, raw_path: str, method: str) -> tuple[RequestHandler, str, dict[str, Any]] | None:
        """The handler and path variables Flask's URL map gives this request, if it is a mapping's."""
        try:
            path = raw_path.encode("latin-1").decode("utf-8", "replace")  # as werkzeug decodes PATH_INFO
            name, args = self.url_map.bind("", path_info=path).match(method=method)
        except (HTTPException, UnicodeError):  # 404, 405, redirects: Flask answers them
            return None
        by_method = self.routes.get(name)  # type: ignore[arg-type]
        if by_method is None:
            return None
        handler = by_method.get(method)
        return None if handler is None else (handler, self._labels.get(name, name), args)  # type: ignore[arg-type]

    def _match_segment(self, raw_path: str, method: str) -> tuple[RequestHandler, str, dict[str, Any]] | None:
        """The segment rule serving this request, by prefix and suffix (see :meth:`add_routes`)."""
        for prefix, suffix, wanted, handler, var, label in self._segments:
            if (method == wanted and len(raw_path) > len(prefix) + len(suffix) and raw_path.startswith(prefix)
                    and raw_path.endswith(suffix)):
                value = raw_path[len(prefix):len(raw_path) - len(suffix)]
                if "/" not in value:
                    if not value.isascii():  # as werkzeug decodes PATH_INFO
                        value = value.encode("latin-1").decode("utf-8", "replace")
                    return handler, label, {var: value}
        return None

    def _check_segments(self) -> None:
        """Keep the segment rules the URL map really routes as given (a probe path each)."""
        segments = []
        for name, prefix, var, suffix in self._segment_candidates:
            for method, handler in self.routes.get(name, {}).items():
                try:
                    matched, args = self.url_map.bind("", path_info=f"{prefix}probe{suffix}").match(method=method)
                except HTTPException:
                    continue
                if matched == name and args == {var: "probe"}:
                    segments.append((prefix, suffix, method, handler, var, self._labels.get(name, name)))
        self._segments = segments

    def _build_table(self) -> dict[tuple[str, str], tuple[RequestHandler, str]]:
        """(raw PATH_INFO, method) → handler for the static endpoints, checked against the URL map.

        Built at the first request, once every route (the device API's too) is registered: Flask
        itself refuses new routes after its first request.
        """
        with self._table_lock:
            if self._table is not None:
                return self._table
            table: dict[tuple[str, str], tuple[RequestHandler, str]] = {}
            for name, path in self._static_paths.items():
                for method, handler in self.routes[name].items():
                    try:
                        matched, _ = self.url_map.bind("", path_info=path).match(method=method)
                    except HTTPException:
                        continue
                    if matched == name:
                        table[(path.encode("utf-8").decode("latin-1"), method)] = (handler,
                                                                                   self._labels.get(name, path))
            self._check_segments()
            self._table = table
            return table
