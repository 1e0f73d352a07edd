"""Counts the request body bytes devices send to the HTTP server, for the statistics telemetry.

Installed in front of the app only with statistics on (``receivedBytesFromDevices``): one header
read and one locked addition per request. waitress has read the whole body before it calls the
app and gives a chunked body its decoded ``CONTENT_LENGTH``, so the header is the size received.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.statistics.counting import ConnectorCounts

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyBytes:
    """WSGI middleware: adds each request's body size to ``counts`` and passes the request on."""

    def __init__(self, app: WsgiApp, counts: ConnectorCounts) -> None:
        self.app = app
        self.counts = counts

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
            except ValueError:
                size = 0
            if size > 0:
                self.counts.received_bytes(size)
        return self.app(environ, start_response)
