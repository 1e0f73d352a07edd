"""One HTTPS connection inside the TLS front: its TLS state, its waitress socket and both byte queues."""
from __future__ import annotations

import selectors
import socket
import ssl
import time

CHUNK_BYTES = 64 * 1024
BUFFER_LIMIT_BYTES = 256 * 1024  # per connection and direction; reading pauses above it
DRAIN_QUIET_SECONDS = 0.25  # while closing, a connection quiet this long between requests is closed

HANDSHAKE, CONNECTING, OPEN = "handshake", "connecting", "open"


class Relay:
    """One client connection: its TLS state, its waitress connection and both byte queues.

    Only the TLS front's loop thread touches it; the methods move bytes between the sockets, the
    memory BIOs and the queues, and never register sockets or close the connection themselves.
    """

    __slots__ = ("client", "peer", "tls", "incoming", "outgoing", "backend", "phase", "deadline",
                 "to_client", "to_backend", "client_tcp_eof", "client_eof", "backend_eof",
                 "backend_shut", "closing_tls", "awaiting_response", "last_io", "masks")

    def __init__(self, client: socket.socket, peer: object, context: ssl.SSLContext, deadline: float):
        self.client = client
        self.peer = peer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.backend: socket.socket | None = None
        self.phase = HANDSHAKE
        self.deadline = deadline  # of the handshake, then of the backend connect
        self.to_client = bytearray()
        self.to_backend = bytearray()
        self.client_tcp_eof = False  # the client's TCP stream ended
        self.client_eof = False  # no more plaintext will come from the client
        self.backend_eof = False
        self.backend_shut = False  # we half-closed the waitress connection
        self.closing_tls = False  # close_notify queued; close once it is sent
        self.awaiting_response = False  # request bytes went to waitress and no answer came yet
        self.last_io = time.monotonic()
        self.masks: dict[socket.socket, int] = {}

    def is_idle(self, now: float) -> bool:
        """Between requests (or before the first): safe to close while draining."""
        if self.phase == HANDSHAKE:
            return True
        return (not self.awaiting_response and not self.to_client and not self.to_backend
                and self.incoming.pending == 0 and now - self.last_io >= DRAIN_QUIET_SECONDS)

    def read_client(self) -> None:
        """Feed what the client sent into the TLS object (or note its end); raises OSError if gone."""
        try:
            data = self.client.recv(CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        self.last_io = time.monotonic()
        if data:
            self.incoming.write(data)
        else:
            self.client_tcp_eof = True
            self.incoming.write_eof()

    def read_backend(self) -> None:
        """Encrypt what waitress answered for the client (or note its end); raises OSError if gone."""
        assert self.backend is not None
        try:
            data = self.backend.recv(CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        self.last_io = time.monotonic()
        if data:
            self.awaiting_response = False
            self.tls.write(data)
        else:
            self.backend_eof = True
            self.to_backend.clear()

    def decrypt_to_backend(self) -> None:
        """Move decrypted request bytes to the waitress queue until it is full or nothing is left."""
        while len(self.to_backend) < BUFFER_LIMIT_BYTES:
            try:
                data = self.tls.read(CHUNK_BYTES)
            except ssl.SSLWantReadError:
                self.client_eof = self.client_tcp_eof
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.client_eof = True
                break
            if not data:
                self.client_eof = True
                break
            self.to_backend += data
            self.awaiting_response = True

    def queue_close_notify(self) -> None:
        """Queue TLS close_notify for the client; the connection closes once it is sent."""
        self.closing_tls = True
        try:
            self.tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # close_notify is queued; the peer's reply is not awaited
        self.to_client += self.outgoing.read()

    def client_mask(self) -> int:
        """The selector events wanted on the client socket: write while queued, read while there is room."""
        mask = selectors.EVENT_WRITE if self.to_client else 0
        room = len(self.to_backend) < BUFFER_LIMIT_BYTES and self.incoming.pending < BUFFER_LIMIT_BYTES
        if room and not self.client_tcp_eof and not self.closing_tls:
            mask |= selectors.EVENT_READ
        return mask

    def backend_mask(self) -> int:
        """The selector events wanted on the waitress socket (write to finish a pending connect)."""
        if self.phase == CONNECTING:
            return selectors.EVENT_WRITE
        mask = selectors.EVENT_WRITE if self.to_backend else 0
        if not self.backend_eof and len(self.to_client) < BUFFER_LIMIT_BYTES:
            mask |= selectors.EVENT_READ
        return mask
