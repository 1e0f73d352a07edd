"""HTTPS for the REST connector: a TLS terminator that relays decrypted bytes to waitress."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time

from connectors.rest.client_address import PeerRegistry
from connectors.rest.tls_context import TlsConfigError, build_context
from connectors.rest.tls_relay import CHUNK_BYTES, CONNECTING, DRAIN_QUIET_SECONDS, HANDSHAKE, OPEN, Relay

__all__ = ["TlsConfigError", "TlsFront", "build_context"]

ACCEPTS_PER_WAKEUP = 64
_ACCEPT_PAUSE_SECONDS = 0.1  # after EMFILE/ENFILE, so a full fd table cannot spin the loop
_BACKEND_WARNING_INTERVAL = 60.0

class TlsFront:
    """Listens on the public address, terminates TLS and relays plaintext to waitress.

    One thread runs a selector loop over every connection: handshakes are non-blocking and
    bounded by ``handshake_timeout``; at most ``connection_limit`` client connections are open
    (further ones wait in the kernel's listen backlog). waitress sees every connection coming
    from the loopback (REMOTE_ADDR 127.0.0.1 or ``localhost`` for a unix socket backend); with
    ``peers`` the real client of each TCP backend connection is recorded for
    :class:`~connectors.rest.client_address.RealClientAddress`.
    """

    def __init__(self, host: str, port: int, cert: str, key: str, backend: tuple[str, int] | str,
                 connection_limit: int = 1000, handshake_timeout: float = 10.0,
                 logger: logging.Logger | None = None, peers: PeerRegistry | None = None) -> None:
        """``peers``: where each backend connection's local port is recorded with its client's address."""
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if connection_limit < 1:
            raise ValueError(f"connection_limit must be >= 1, got {connection_limit}")
        if handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be > 0, got {handshake_timeout}")
        self._host = host
        self._port = port
        self._backend = backend
        self._limit = connection_limit
        self._handshake_timeout = handshake_timeout
        self._log = logger or logging.getLogger(__name__)
        self._context = build_context(cert, key)
        self._listener: socket.socket | None = None
        self._backend_family = socket.AF_UNIX if isinstance(backend, str) else socket.AF_INET
        self._backend_address: object = backend
        self._selector: selectors.BaseSelector | None = None
        self._waker: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._relays: set[Relay] = set()
        self._peers = peers
        self._backend_ports: dict[Relay, int] = {}
        self._accepting = False
        self._accept_resume_at = 0.0
        self._stop_requested = threading.Event()
        self._drain_deadline = 0.0
        self._last_backend_warning = float("-inf")

    @property
    def port(self) -> int:
        """The bound port (the configured one until start())."""
        return self._port

    @property
    def alive(self) -> bool:
        """The relay thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the public address and start the relay thread; raises OSError if the port is taken."""
        if self._thread is not None:
            raise RuntimeError("TlsFront already started")
        if not isinstance(self._backend, str):
            host, port = self._backend
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            self._backend_family, self._backend_address = family, address
        family, _, _, _, address = socket.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name == "posix":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(min(self._limit, socket.SOMAXCONN))
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._waker = socket.socketpair()
        for end in self._waker:
            end.setblocking(False)
        self._selector.register(self._waker[0], selectors.EVENT_READ, None)
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=f"tls-front-{self.port}", daemon=True)
        self._thread.start()
        self._log.info("HTTPS (TLS >= 1.2) on %s:%d, relaying to waitress at %s; connection limit %d, "
                       "handshake timeout %.1f s", self._host, self.port, self._backend, self._limit,
                       self._handshake_timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout`` s, close all, join."""
        thread = self._thread
        if thread is None or self._stop_requested.is_set():
            if thread is not None:
                thread.join(timeout + 1.0)
            return
        self._drain_deadline = time.monotonic() + max(0.0, timeout)
        self._stop_requested.set()
        if self._waker is not None:
            with contextlib.suppress(OSError):  # a full buffer means a wakeup is pending anyway
                self._waker[1].send(b"x")
        thread.join(timeout + 5.0)
        if thread.is_alive():
            self._log.warning("TLS front thread did not stop within %.1f s", timeout + 5.0)
        self._log.info("HTTPS on %s:%d closed", self._host, self.port)

    # -- the loop (only the relay thread touches the sockets below) --------------------------------
    def _run(self) -> None:
        assert self._selector is not None and self._waker is not None and self._listener is not None
        try:
            while True:
                stopping = self._stop_requested.is_set()
                if stopping and self._accepting:
                    self._stop_accepting()
                now = time.monotonic()
                if stopping and (not self._relays or now >= self._drain_deadline):
                    break
                for key, mask in self._selector.select(self._select_timeout(now, stopping)):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._waker[0].recv(4096)
                    elif key.data == "accept":
                        self._accept()
                    else:
                        self._handle(key.data, key.fileobj, mask)
                self._housekeeping(time.monotonic(), self._stop_requested.is_set())
        except Exception:
            self._log.exception("TLS front loop failed; HTTPS connections are closed")
        finally:
            for relay in list(self._relays):
                self._close_relay(relay)
            self._selector.close()
            self._listener.close()
            for end in self._waker:
                end.close()

    def _select_timeout(self, now: float, stopping: bool) -> float:
        timeout = 1.0
        if stopping:
            timeout = min(timeout, DRAIN_QUIET_SECONDS / 2, max(0.0, self._drain_deadline - now))
        if not self._accepting and not stopping and self._accept_resume_at > now:
            timeout = min(timeout, self._accept_resume_at - now)
        for relay in self._relays:
            if relay.phase != OPEN:
                timeout = min(timeout, max(0.0, relay.deadline - now))
        return timeout

    def _stop_accepting(self) -> None:
        assert self._selector is not None and self._listener is not None
        if self._accepting:
            self._selector.unregister(self._listener)
            self._accepting = False

    def _housekeeping(self, now: float, stopping: bool) -> None:
        for relay in list(self._relays):
            if relay.phase != OPEN and now >= relay.deadline:
                what = "TLS handshake" if relay.phase == HANDSHAKE else "connect to waitress"
                self._log.debug("%s from %s timed out; closing", what, relay.peer)
                self._close_relay(relay)
            elif stopping and relay.is_idle(now):
                self._close_relay(relay, graceful=True)
        if (not stopping and not self._accepting and len(self._relays) < self._limit
                and now >= self._accept_resume_at):
            assert self._selector is not None
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
            self._accepting = True

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            if len(self._relays) >= self._limit:
                self._stop_accepting()
                self._log.debug("connection limit %d reached; new connections wait", self._limit)
                return
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._log.warning("cannot accept HTTPS connections: %s; pausing", exc.strerror)
                    self._stop_accepting()
                    self._accept_resume_at = time.monotonic() + _ACCEPT_PAUSE_SECONDS
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                relay = Relay(sock, peer, self._context, time.monotonic() + self._handshake_timeout)
            except OSError:
                sock.close()
                continue
            self._relays.add(relay)
            self._set_interest(relay, sock, selectors.EVENT_READ)

    # -- one connection ----------------------------------------------------------------------------
    def _handle(self, relay: Relay, sock: socket.socket, mask: int) -> None:
        if relay not in self._relays:
            return  # closed earlier in this batch of events
        try:
            if sock is relay.client:
                if mask & selectors.EVENT_WRITE and not self._send(relay, sock, relay.to_client):
                    return
                if mask & selectors.EVENT_READ:
                    relay.read_client()
            else:
                if mask & selectors.EVENT_WRITE:
                    if relay.phase == CONNECTING:
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if code:
                            return self._backend_failed(relay, code)
                        relay.phase = OPEN
                    elif not self._send(relay, sock, relay.to_backend):
                        return
                if mask & selectors.EVENT_READ and relay.phase == OPEN:
                    relay.read_backend()
            if relay in self._relays:
                self._progress(relay)
        except (ssl.SSLError, OSError) as exc:
            self._log.debug("HTTPS connection from %s failed: %s", relay.peer, exc)
            self._close_relay(relay)
        except Exception:
            self._log.warning("HTTPS connection from %s failed unexpectedly", relay.peer, exc_info=True)
            self._close_relay(relay)

    def _send(self, relay: Relay, sock: socket.socket, buffer: bytearray) -> bool:
        """Send what the socket takes; False (and the relay closed) when the peer is gone."""
        try:
            sent = sock.send(buffer[:CHUNK_BYTES * 4])
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._log.debug("HTTPS connection from %s: peer gone (%s)", relay.peer, exc)
            self._close_relay(relay)
            return False
        del buffer[:sent]
        relay.last_io = time.monotonic()
        return True

    def _progress(self, relay: Relay) -> None:
        """Advance the TLS state machine as far as the buffers allow, then update the interests."""
        if relay.phase == HANDSHAKE:
            try:
                relay.tls.do_handshake()
            except ssl.SSLWantReadError:
                if relay.client_tcp_eof:
                    self._log.debug("client %s left during the TLS handshake", relay.peer)
                    self._close_relay(relay)
                    return
            except ssl.SSLError as exc:
                # a plain-HTTP client lands here ("http request"); it gets a closed connection
                self._log.debug("TLS handshake with %s failed: %s", relay.peer, exc.reason or exc)
                relay.to_client += relay.outgoing.read()  # the alert, best effort
                self._close_relay(relay, graceful=True)
                return
            else:
                self._connect_backend(relay)
                if relay not in self._relays:
                    return
        if relay.phase != HANDSHAKE and not relay.client_eof and not relay.backend_eof:
            relay.decrypt_to_backend()
        relay.to_client += relay.outgoing.read()
        if (relay.client_eof and relay.phase == OPEN and not relay.to_backend and not relay.backend_shut
                and not relay.backend_eof):
            assert relay.backend is not None
            relay.backend.shutdown(socket.SHUT_WR)  # let waitress see the client's end
            relay.backend_shut = True
        if relay.backend_eof and not relay.closing_tls:
            relay.queue_close_notify()
        if relay.closing_tls and not relay.to_client:
            self._close_relay(relay)
            return
        self._update_interests(relay)

    def _update_interests(self, relay: Relay) -> None:
        self._set_interest(relay, relay.client, relay.client_mask())
        if relay.backend is not None:
            self._set_interest(relay, relay.backend, relay.backend_mask())

    def _set_interest(self, relay: Relay, sock: socket.socket, mask: int) -> None:
        assert self._selector is not None
        current = relay.masks.get(sock, 0)
        if mask == current:
            return
        if not mask:
            self._selector.unregister(sock)
        elif not current:
            self._selector.register(sock, mask, relay)
        else:
            self._selector.modify(sock, mask, relay)
        relay.masks[sock] = mask

    def _connect_backend(self, relay: Relay) -> None:
        sock = socket.socket(self._backend_family, socket.SOCK_STREAM)
        relay.backend = sock
        sock.setblocking(False)
        if self._backend_family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        relay.deadline = time.monotonic() + self._handshake_timeout
        code = sock.connect_ex(self._backend_address)  # type: ignore[arg-type]
        if self._peers is not None and self._backend_family == socket.AF_INET and code in (
                0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            port = sock.getsockname()[1]  # bound by connect: known before waitress sees a byte
            self._backend_ports[relay] = port
            self._peers.add(port, str(relay.peer[0]) if isinstance(relay.peer, tuple) else str(relay.peer))
        if code == 0:
            relay.phase = OPEN
        elif code in (errno.EINPROGRESS, errno.EWOULDBLOCK) and self._backend_family != socket.AF_UNIX:
            relay.phase = CONNECTING
        else:
            self._backend_failed(relay, code)

    def _backend_failed(self, relay: Relay, code: int) -> None:
        now = time.monotonic()
        if now - self._last_backend_warning >= _BACKEND_WARNING_INTERVAL:
            self._last_backend_warning = now
            self._log.warning("TLS front cannot reach waitress at %s: %s (further failures in the next "
                              "%d s are not logged)", self._backend, os.strerror(code),
                              _BACKEND_WARNING_INTERVAL)
        self._close_relay(relay)

    def _close_relay(self, relay: Relay, graceful: bool = False) -> None:
        if relay not in self._relays:
            return
        self._relays.discard(relay)
        port = self._backend_ports.pop(relay, None)
        if port is not None and self._peers is not None:
            self._peers.remove(port)
        assert self._selector is not None
        for sock in list(relay.masks):
            if relay.masks[sock]:
                self._selector.unregister(sock)
        relay.masks.clear()
        if graceful and relay.phase != HANDSHAKE and not relay.closing_tls:
            relay.queue_close_notify()
        if graceful and relay.to_client:
            try:
                relay.client.send(relay.to_client)  # best effort: an alert or close_notify
            except OSError:
                pass
        for sock in (relay.client, relay.backend):
            if sock is not None:
                sock.close()
