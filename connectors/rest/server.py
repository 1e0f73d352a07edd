"""Serves the REST connector's WSGI app with waitress (behind a TLS front when SSL is on)."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask, WSGITask

from connectors.rest.client_address import PeerRegistry, RealClientAddress
from connectors.rest.forwarded import ForwardedClientAddress, TrustedProxies
from connectors.rest.model import ServerConfig


class JsonErrorTask(ErrorTask):
    """waitress's own answers (malformed request line or headers, bad framing, oversize head) as JSON.

    waitress answers these itself, before the app sees the request; its default body is plain text.
    The status is kept (400, 413, 431, 501; a 500 would only come from a waitress bug).
    """

    def execute(self) -> None:
        error = self.request.error
        reason = str(getattr(error, "body", "") or getattr(error, "reason", "bad request")).strip()[:200]
        code = int(getattr(error, "code", 400))
        message = f"{getattr(error, 'reason', 'Bad Request')}: {reason}"
        body = json.dumps({"error": message, "status": code}, ensure_ascii=False).encode("utf-8")
        self.status = f"{code} {getattr(error, 'reason', 'Bad Request')}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class OneSendTask(WSGITask):
    """A WSGI task that sends a whole small answer, head and body, in one ``send``.

    waitress writes the head and then each body chunk with a ``send`` of its own. The gateway's
    answers are one chunk with a Content-Length, so that is two sends, two TCP segments and two
    hand-overs of the GIL (each send releases it) per request. When the first body chunk is the
    whole body, both go out together; anything else is left to waitress.
    """

    def write(self, data: bytes) -> None:
        if (not self.wrote_header and data and self.complete and self.has_body
                and not self.chunked_response and self.content_length == len(data)):
            head = self.build_response_header()
            self.wrote_header = True
            self.content_bytes_written += len(data)
            self.channel.write_soon(head + data)
            return
        super().write(data)


class GatewayChannel(HTTPChannel):
    """A waitress channel with JSON error answers that remembers when its unfinished request head began.

    waitress closes a connection only after ``channel_timeout`` seconds with no bytes at all, so a
    client dripping one byte a second (slowloris) would hold its connection forever; enough of them
    fill ``connection_limit`` and nobody else is accepted. :func:`drop_slow_heads` cuts them off.
    """

    error_task_class = JsonErrorTask
    task_class = OneSendTask
    head_started: float | None = None

    def writable(self) -> bool:
        """Ask the I/O loop for write readiness only when :meth:`handle_write` can send something.

        While a task runs, its worker thread sends its own output (``write_soon`` flushes under the
        channel's ``outbuf_lock`` and pulls the trigger if bytes remain), and waitress's
        ``handle_write`` only tries that lock without waiting. waitress's ``writable`` is true all that
        time, so ``select`` returns at once, the I/O thread finds the lock taken and loops, and it
        holds the GIL the worker needs to leave the lock. On one core the scheduler breaks this up;
        with the threads on two cores it feeds itself: the I/O thread was measured at 80-90 % of a
        core, looping ~11,000 times a second, while serving a quarter of the requests. Reporting the
        channel not writable while its worker holds the lock sends the same bytes in the same order.
        """
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        if not self.requests:
            return True
        if not self.outbuf_lock.acquire(False):
            return False  # the worker is sending; it pulls the trigger if anything is left after
        self.outbuf_lock.release()
        return True

    def received(self, data: bytes) -> bool:
        result = super().received(data)
        pending = self.request
        if pending is None or pending.headers_finished:
            self.head_started = None
        elif self.head_started is None:
            self.head_started = time.monotonic()
        return bool(result)


def drop_slow_heads(server: Any, head_timeout: float, logger: logging.Logger) -> None:
    """Make ``server``'s periodic maintenance also close connections whose request head is overdue."""
    original = server.maintenance

    def maintenance(now: float) -> None:
        original(now)
        cutoff = time.monotonic() - head_timeout
        dropped = 0
        for channel in list(server.active_channels.values()):
            started = getattr(channel, "head_started", None)
            if started is not None and started < cutoff and not channel.will_close:
                channel.will_close = True
                dropped += 1
        if dropped:
            logger.warning("closed %d connection(s): request head not complete %g s after its first byte "
                           "(slow or stalled clients)", dropped, head_timeout)

    server.maintenance = maintenance


class HttpServer:
    """waitress in a background thread, with explicit limits and a graceful stop."""

    def __init__(self, app: Any, config: ServerConfig, logger: logging.Logger) -> None:
        self.config = config
        self.log = logger
        self._app = app
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._tls: Any = None
        self.port = config.port
        #: set with trustedProxies: counts requests whose client address a proxy named (for the metrics)
        self.forwarded: ForwardedClientAddress | None = None

    def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken or the threads cannot be started,
        TlsConfigError on a bad cert."""
        cfg = self.config
        internal = cfg.ssl
        peers = PeerRegistry() if cfg.ssl else None  # the TLS front tells who each relayed client is
        app = self._app
        if cfg.trusted_proxies:  # runs after the TLS front's hand-over: it sees the real peer
            app = self.forwarded = ForwardedClientAddress(app, TrustedProxies(cfg.trusted_proxies))
        if peers is not None:
            app = RealClientAddress(app, peers)
        try:
            self._server = self._create(app, cfg, internal)
        except RuntimeError as exc:  # threading's "can't start new thread": waitress starts them all first
            raise OSError(f"cannot start the HTTP server's {cfg.threads} threads ({exc}): the process may not "
                          "run that many (systemd TasksMax, a container's pids limit, ulimit -u or -v); raise "
                          "that limit, or lower threads, maxWaitingResponses or deviceApi.maxConcurrentPolls "
                          "(the server runs one thread per allowed wait)") from exc
        self._server.channel_class = GatewayChannel
        drop_slow_heads(self._server, cfg.channel_timeout, self.log)
        self.port = int(self._server.effective_port)
        if cfg.ssl:
            from connectors.rest.tls import TlsFront

            try:
                self._tls = TlsFront(cfg.host, cfg.port, cfg.cert, cfg.key, ("127.0.0.1", self.port),
                                     connection_limit=cfg.connection_limit, logger=self.log, peers=peers)
                self._tls.start()
            except Exception:
                self._server.close()
                self._server = None
                raise
            self.port = self._tls.port
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self._thread.start()
        scheme = "https" if cfg.ssl else "http"
        self.log.info("REST connector listening on %s://%s:%d (threads=%d, connection limit=%d, "
                      "body limit=%d bytes)", scheme, cfg.host, self.port, cfg.threads,
                      cfg.connection_limit, cfg.max_body_bytes)

    @staticmethod
    def _create(app: Any, cfg: ServerConfig, internal: bool) -> Any:
        """waitress's server, its worker threads all started; bound to loopback behind the TLS front."""
        return create_server(
            app,
            host="127.0.0.1" if internal else cfg.host,
            port=0 if internal else cfg.port,
            threads=cfg.threads,
            connection_limit=cfg.connection_limit,
            channel_timeout=cfg.channel_timeout,
            # Flask enforces maxBodySize with a JSON 413; waitress's own limit is only a backstop
            max_request_body_size=cfg.max_body_bytes * 2 + 65536,
            max_request_header_size=65536,
            url_scheme="https" if cfg.ssl else "http",
            ident="rest-gateway",
            # with trustedProxies, ForwardedClientAddress removes them from untrusted peers itself
            clear_untrusted_proxy_headers=not cfg.trusted_proxies,
            expose_tracebacks=False,
            # how often idle connections and overdue request heads are looked for
            cleanup_interval=max(1, min(cfg.channel_timeout // 2, 30)),
        )

    @property
    def alive(self) -> bool:
        """The serving thread runs (and the TLS front's, with SSL on)."""
        tls_ok = self._tls is None or self._tls.alive
        return self._thread is not None and self._thread.is_alive() and tls_ok

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # the loop ends abruptly when its sockets are closed during stop
            if self._server is not None and self._server.accepting:
                self.log.exception("HTTP server loop failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then close everything."""
        server = self._server
        if server is None:
            return
        if self._tls is not None:
            self._tls.close(timeout=min(timeout, 5.0))
        server.accepting = False
        deadline = time.monotonic() + timeout
        dispatcher = server.task_dispatcher
        while time.monotonic() < deadline:
            with dispatcher.lock:
                busy = dispatcher.active_count or len(dispatcher.queue)
            pending_output = any(getattr(ch, "total_outbufs_len", 0) for ch in list(server._map.values()))
            if not busy and not pending_output:
                break
            time.sleep(0.02)
        dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        from waitress import wasyncore

        wasyncore.close_all(server._map)
        server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
