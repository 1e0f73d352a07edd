"""The WSGI app the HTTP server calls, replaceable while it serves (hot reload).

waitress holds one :class:`AppSwitch` for its whole life; a reload builds a complete new Flask
app (routes, handlers, converters) beside the running one and :meth:`AppSwitch.switch` replaces
the reference in one assignment. Each request reads the reference once, when it starts, so a
request in flight finishes on the app it started on and every later request sees the new one:
no request ever sees half of each.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class AppSwitch:
    """A WSGI app that forwards each request to the current app."""

    def __init__(self, app: WsgiApp) -> None:
        self.current = app

    def switch(self, app: WsgiApp) -> WsgiApp:
        """Serve later requests with ``app``; returns the app it replaces."""
        previous, self.current = self.current, app
        return previous

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.current(environ, start_response)
