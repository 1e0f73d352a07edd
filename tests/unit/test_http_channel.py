"""The REST server's waitress channel: the I/O loop waits for write readiness only when it can send.

A channel whose worker is sending its own answer (holding the output lock) must not be offered to
``select`` as writable: waitress would find the lock taken and loop at once, holding the GIL the
worker needs (docs/performance.md, "The I/O thread's spin"). The bytes must still all arrive.
A one-piece answer leaves in one send, byte for byte what waitress would have sent in two.
"""
from __future__ import annotations

import http.client
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from waitress.server import create_server
from waitress.task import WSGITask

from connectors.rest.model import ServerConfig
from connectors.rest.server import GatewayChannel, HttpServer


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture()
def channel() -> Iterator[GatewayChannel]:
    server = create_server(hello, host="127.0.0.1", port=0, threads=1)
    mine, peer = socket.socketpair()
    made = GatewayChannel(server, mine, ("127.0.0.1", 1), server.adj, map={})
    try:
        yield made
    finally:
        made.close()
        peer.close()
        server.close()
        server.task_dispatcher.shutdown(timeout=5)


def queue_output(channel: GatewayChannel, data: bytes) -> None:
    channel.outbufs[-1].append(data)
    channel.total_outbufs_len += len(data)


def test_an_idle_channel_is_not_writable(channel: GatewayChannel) -> None:
    assert not channel.writable()


def test_output_with_no_running_task_is_writable(channel: GatewayChannel) -> None:
    queue_output(channel, b"HTTP/1.1 200 OK\r\n\r\n")
    assert channel.writable()


def test_a_running_tasks_output_waits_while_its_worker_holds_the_lock(channel: GatewayChannel) -> None:
    channel.requests = [object()]  # a task is running on this channel
    queue_output(channel, b"HTTP/1.1 200 OK\r\n\r\n")
    held, release = threading.Event(), threading.Event()

    def worker() -> None:
        with channel.outbuf_lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert held.wait(5)
        assert not channel.writable(), "select would return at once and the I/O thread would spin"
    finally:
        release.set()
        thread.join(5)
    assert channel.writable(), "bytes left once the worker let go must be sent by the I/O thread"


def test_a_channel_to_close_stays_writable(channel: GatewayChannel) -> None:
    channel.close_when_flushed = True
    assert channel.writable()


def streaming(size: int, chunk: int) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        for start in range(0, size, chunk):
            yield bytes([start // chunk % 251]) * min(chunk, size - start)
    return app


def test_answers_larger_than_the_socket_buffer_arrive_whole_on_concurrent_connections() -> None:
    """The worker leaves bytes the socket cannot take; the I/O thread must send them once it can."""
    size, chunk = 3_000_000, 65_536
    server = HttpServer(streaming(size, chunk), ServerConfig(port=0, threads=4), logging.getLogger("test"))
    server.start()
    results: list[bytes] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            for _ in range(3):  # keep-alive: the next request follows the long answer on one connection
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
                conn.request("GET", "/")
                results.append(conn.getresponse().read())
                conn.request("GET", "/")
                results.append(conn.getresponse().read())
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    clients = [threading.Thread(target=fetch) for _ in range(6)]
    try:
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
    finally:
        server.stop(timeout=2)
    assert not errors
    expected = b"".join(streaming(size, chunk)({}, lambda *args: None))
    assert len(results) == 36
    assert all(body == expected for body in results)


def raw_exchange(app: Any, request: bytes, plain: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, int]:
    """The bytes one request gets back, and how many times the worker handed output to the channel."""
    sends: list[int] = []
    original = GatewayChannel.write_soon

    def counting(self: GatewayChannel, data: Any) -> int:
        sends.append(len(data))
        return original(self, data)

    monkeypatch.setattr(GatewayChannel, "write_soon", counting)
    if plain:
        monkeypatch.setattr(GatewayChannel, "task_class", WSGITask)
    server = HttpServer(app, ServerConfig(port=0, threads=2), logging.getLogger("test"))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(request)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
    finally:
        server.stop(timeout=2)
        monkeypatch.undo()
    head, _, body = received.partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body, len(sends)


def chunked(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # no Content-Length: chunked encoding
    yield b"first"
    yield b"second"


GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_a_one_piece_answer_goes_out_in_one_send_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    mine, sends = raw_exchange(hello, GET, plain=False, monkeypatch=monkeypatch)
    theirs, their_sends = raw_exchange(hello, GET, plain=True, monkeypatch=monkeypatch)
    assert mine == theirs and mine.endswith(b"\r\n\r\nok")
    assert (sends, their_sends) == (1, 2)


@pytest.mark.parametrize("app", [streaming(200_000, 65_536), chunked], ids=["streamed", "chunked"])
def test_other_answers_are_left_to_waitress(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mine, sends = raw_exchange(app, GET, plain=False, monkeypatch=monkeypatch)
    theirs, their_sends = raw_exchange(app, GET, plain=True, monkeypatch=monkeypatch)
    assert mine == theirs and sends == their_sends


def test_an_answer_without_a_body_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_content(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return [b""]

    mine, _ = raw_exchange(no_content, GET, plain=False, monkeypatch=monkeypatch)
    theirs, _ = raw_exchange(no_content, GET, plain=True, monkeypatch=monkeypatch)
    assert mine == theirs and mine.startswith(b"HTTP/1.1 204")
