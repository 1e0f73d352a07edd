"""The real client address of requests relayed by the TLS front, for ``REMOTE_ADDR`` (and so ``by: client``).

The TLS front connects to waitress over loopback, one backend connection per client connection.
It records each backend connection's local port with the client's address in a
:class:`PeerRegistry`; :class:`RealClientAddress` (WSGI middleware) looks up the request's
``REMOTE_PORT`` there and puts the client's address in ``REMOTE_ADDR``. Nothing travels in a
header, so a client cannot claim another address: the key is the TCP connection itself.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PeerRegistry:
    """Local port of a front→waitress connection → the address of the client it relays. Thread-safe."""

    def __init__(self) -> None:
        self._peers: dict[int, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._peers)

    def add(self, local_port: int, client_host: str) -> None:
        with self._lock:
            self._peers[local_port] = client_host

    def remove(self, local_port: int) -> None:
        with self._lock:
            self._peers.pop(local_port, None)

    def get(self, local_port: int) -> str | None:
        with self._lock:
            return self._peers.get(local_port)


class RealClientAddress:
    """WSGI middleware: ``REMOTE_ADDR`` of a request relayed by the TLS front becomes the client's address."""

    def __init__(self, app: WsgiApp, peers: PeerRegistry) -> None:
        self.app = app
        self.peers = peers

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        port = environ.get("REMOTE_PORT")
        if port and environ.get("REMOTE_ADDR") == "127.0.0.1":
            try:
                client = self.peers.get(int(port))
            except ValueError:
                client = None
            if client is not None:
                environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
