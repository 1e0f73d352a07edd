"""Serves the admin WSGI app with its own small waitress server, apart from the device ports.

Device traffic never shares its threads or its connection limit: a flood of device requests
fills the connectors' waitress queues, not this one, so probes and scrapes keep answering.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from waitress.server import create_server

from gateway.config.model import AdminConfig


class AdminServer:
    """waitress on ``config.host:config.port`` in a background thread."""

    def __init__(self, app: Any, config: AdminConfig, logger: logging.Logger) -> None:
        self.app = app
        self.config = config
        self.log = logger
        self.port = config.port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        cfg = self.config
        self._server = create_server(
            self.app, host=cfg.host, port=cfg.port, threads=cfg.threads,
            connection_limit=32, channel_timeout=30, cleanup_interval=10,
            max_request_body_size=65536, max_request_header_size=16384,
            ident="rest-gateway-admin", expose_tracebacks=False, clear_untrusted_proxy_headers=True,
        )
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._run, name="admin-server", daemon=True)
        self._thread.start()
        self.log.info("admin listener on http://%s:%d (status page /, /metrics, /healthz, /readyz)",
                      cfg.host, self.port)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # the loop ends abruptly when its sockets are closed during stop
            if self._server is not None and self._server.accepting:
                self.log.exception("admin server loop failed")

    def stop(self) -> None:
        """Close the listener and its connections; in-flight scrapes are cut short."""
        server = self._server
        if server is None:
            return
        server.accepting = False
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=2.0)
        from waitress import wasyncore

        wasyncore.close_all(server._map)
        server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
