"""Load generators for bench/coap.py that stay well below the server's cost per message.

Both are closed loops of ``clients`` concurrent clients on one asyncio loop, callback-driven (no task or
future per message): a client sends its next request as soon as the answer to the previous one arrives.

- CoAP: each client has its own UDP socket (its own source port, as separate devices have). The
  request is one pre-encoded CON POST; only the message id and the token are patched in per request,
  and only the 4-byte header (type, code, message id) of the answer is parsed. An empty ACK followed by
  a separate response is handled (matched on the token, acknowledged); a request unanswered for
  ``retransmit`` seconds is sent again with the same message id (a CoAP retransmission).
- HTTP: each client is one keep-alive TCP connection sending one pre-encoded request; only the status
  line and Content-Length of the answer are parsed.

``observers`` registers N Observe relations (one socket and one device each) and holds them open.
"""
from __future__ import annotations

import asyncio
import os
import random
import resource
import socket
import struct
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

CREATED = int(Code.CREATED)  # 0x41
CONTENT = int(Code.CONTENT)
TOKEN_LENGTH = 4
HEADER = struct.Struct("!BBH")


@dataclass
class LoadFigures:
    """What one load run saw; latencies in seconds, one per answered request."""

    seconds: float = 0.0
    ok: int = 0
    total_ok: int = 0  # successes including warm-up and drain: what the gateway must deliver
    codes: Counter[str] = field(default_factory=Counter)  # every answer that was not a success, by code
    retransmits: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this load process's CPU time during the measured window

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")

        return {"seconds": self.seconds, "ok": self.ok, "total_ok": self.total_ok, "codes": dict(self.codes),
                "retransmits": self.retransmits, "p50_ms": pct(50), "p99_ms": pct(99),
                "max_ms": ordered[-1] * 1000 if ordered else float("nan"), "cpu_seconds": self.cpu_seconds}


def coap_request(path: tuple[str, ...], payload: bytes, code: Code = Code.POST, observe: int | None = None) -> bytes:
    """A CON request with message id 0 and a zero token of TOKEN_LENGTH bytes, to be patched per send."""
    with warnings.catch_warnings():  # aiocoap deprecates setting these by hand; a load generator must
        warnings.simplefilter("ignore", DeprecationWarning)
        message = Message(mtype=Type.CON, code=code, mid=0, token=b"\0" * TOKEN_LENGTH, payload=payload)
    message.opt.uri_path = path
    if payload:
        message.opt.content_format = 50
    if observe is not None:
        message.opt.observe = observe
    return bytes(message.encode())


class _CoapClient(asyncio.DatagramProtocol):
    """One device's socket: sends a request, waits for its 2.01, sends the next."""

    def __init__(self, run: _CoapRun, template: bytes, seed: int) -> None:
        self.run = run
        self.template = bytearray(template)
        self.mid = seed & 0xFFFF
        self.token = seed & 0xFFFFFFFF
        self.sent_at = 0.0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send_next(self) -> None:
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        struct.pack_into("!H", self.template, 2, self.mid)
        struct.pack_into("!I", self.template, 4, self.token)
        self.sent_at = time.perf_counter()
        self.resend()

    def resend(self) -> None:
        assert self.transport is not None
        self.transport.sendto(self.template)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        first, code, mid = HEADER.unpack_from(data)
        kind = (first >> 4) & 3
        if kind == 2 and mid == self.mid:  # ACK of our request
            if code == 0:
                self.sent_at = -abs(self.sent_at)  # acknowledged; the separate response follows
                return
            self.run.answered(self, code)
        elif kind in (0, 1) and code and data[4:4 + TOKEN_LENGTH] == self.template[4:8]:
            if kind == 0:  # a separate CON response: acknowledge it
                assert self.transport is not None
                self.transport.sendto(bytes((0x60, 0)) + data[2:4])
            self.run.answered(self, code)

    def error_received(self, exc: Exception) -> None:
        self.run.figures.codes[f"socket error {exc.__class__.__name__}"] += 1


class _CoapRun:
    def __init__(self, deadline_holder: list[float], success: int) -> None:
        self.figures = LoadFigures()
        self.measuring = False
        self.stopping = False
        self.success = success
        self.deadline = deadline_holder

    def answered(self, client: _CoapClient, code: int) -> None:
        self.figures.total_ok += code == self.success
        if self.measuring:
            if code == self.success:
                self.figures.ok += 1
                self.figures.latencies.append(time.perf_counter() - abs(client.sent_at))
            else:
                self.figures.codes[f"{code >> 5}.{code & 31:02d}"] += 1
        if not self.stopping:
            client.send_next()
        else:
            client.sent_at = 0.0


async def _measure(run: _CoapRun | _HttpRun, warmup: float, seconds: float) -> None:
    """Let the load warm up, count answers for ``seconds`` (wall and this process's CPU), then stop sending."""
    await asyncio.sleep(warmup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    run.measuring = True
    await asyncio.sleep(seconds)
    run.measuring = False
    run.figures.seconds = time.perf_counter() - t0
    run.figures.cpu_seconds = time.process_time() - cpu0
    run.stopping = True


async def _coap_load(host: str, port: int, templates: list[bytes], clients: int, warmup: float,
                     seconds: float, retransmit: float) -> LoadFigures:
    loop = asyncio.get_running_loop()
    run = _CoapRun([0.0], CREATED)
    peers: list[_CoapClient] = []
    for i in range(clients):
        protocol = _CoapClient(run, templates[i % len(templates)], random.getrandbits(32))
        await loop.create_datagram_endpoint(lambda p=protocol: p, remote_addr=(host, port))  # type: ignore[misc]
        peers.append(protocol)
    for peer in peers:
        peer.send_next()

    async def watch() -> None:
        while True:
            await asyncio.sleep(retransmit / 4)
            now = time.perf_counter()
            for peer in peers:
                if peer.sent_at > 0 and now - peer.sent_at > retransmit:
                    run.figures.retransmits += run.measuring
                    peer.resend()
                    peer.sent_at = now

    watcher = asyncio.ensure_future(watch())
    await _measure(run, warmup, seconds)
    await asyncio.sleep(min(1.0, retransmit))  # let the answers in flight arrive (not counted)
    watcher.cancel()
    for peer in peers:
        if peer.transport is not None:
            peer.transport.close()
    return run.figures


class _HttpClient(asyncio.Protocol):
    """One keep-alive connection: POST, read the answer's status and Content-Length, POST again."""

    def __init__(self, run: _HttpRun, request: bytes) -> None:
        self.run = run
        self.request = request
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            at = head.find(b"\r\nContent-Length:")
            if at < 0:
                at = head.lower().find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:line_end if line_end >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[total:]
            self.run.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.stopping:
            self.run.figures.codes["connection lost"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _HttpRun:
    def __init__(self) -> None:
        self.figures = LoadFigures()
        self.measuring = False
        self.stopping = False

    def answered(self, client: _HttpClient, status: int) -> None:
        self.figures.total_ok += status == 200
        if self.measuring:
            if status == 200:
                self.figures.ok += 1
                self.figures.latencies.append(time.perf_counter() - client.sent_at)
            else:
                self.figures.codes[str(status)] += 1
        if not self.stopping:
            client.send_next()


async def _http_load(host: str, port: int, requests: list[bytes], clients: int, warmup: float,
                     seconds: float) -> LoadFigures:
    loop = asyncio.get_running_loop()
    run = _HttpRun()
    peers: list[_HttpClient] = []
    for i in range(clients):
        request = requests[i % len(requests)]
        _, protocol = await loop.create_connection(lambda r=request: _HttpClient(run, r), host, port)  # type: ignore[misc]
        peers.append(protocol)
    await _measure(run, warmup, seconds)
    await asyncio.sleep(0.5)
    for peer in peers:
        if peer.transport is not None:
            peer.transport.close()
    return run.figures


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def run_coap(host: str, port: int, tokens: list[str], payload: bytes, clients: int, warmup: float,
             seconds: float, path: str = "telemetry", retransmit: float = 2.0) -> LoadFigures:
    """CON POST ``/api/v1/{token}/{path}`` from ``clients`` sockets (client i uses token i mod len)."""
    _raise_file_limit(clients + 64)
    templates = [coap_request(("api", "v1", token, path), payload) for token in tokens]
    return asyncio.run(_coap_load(host, port, templates, clients, warmup, seconds, retransmit))


def run_http(host: str, port: int, tokens: list[str], payload: bytes, clients: int, warmup: float,
             seconds: float) -> LoadFigures:
    """POST ``/api/v1/{token}/telemetry`` over ``clients`` keep-alive connections."""
    _raise_file_limit(clients + 64)
    requests = [http_request(host, port, f"/api/v1/{token}/telemetry", payload) for token in tokens]
    return asyncio.run(_http_load(host, port, requests, clients, warmup, seconds))


# ---------------------------------------------------------------- observers


class _Observer(asyncio.DatagramProtocol):
    """One device observing its shared attributes: counts its first notification, ACKs later ones."""

    def __init__(self, registered: asyncio.Future[None] | None) -> None:
        self.registered = registered
        self.transport: asyncio.DatagramTransport | None = None
        self.code = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        first, code, _ = HEADER.unpack_from(data)
        if (first >> 4) & 3 == 0 and self.transport is not None:  # a CON notification: acknowledge it
            self.transport.sendto(bytes((0x60, 0)) + data[2:4])
        if code and self.registered is not None and not self.registered.done():
            self.code = code
            self.registered.set_result(None)


async def _observe(host: str, port: int, tokens: list[str], hold: Any, ready: Any, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    observers: list[tuple[_Observer, bytes]] = []
    for i, token in enumerate(tokens):
        observer = _Observer(loop.create_future())
        await loop.create_datagram_endpoint(lambda o=observer: o, remote_addr=(host, port))  # type: ignore[misc]
        template = bytearray(coap_request(("api", "v1", token, "attributes"), b"", Code.GET, observe=0))
        struct.pack_into("!H", template, 2, i & 0xFFFF)
        struct.pack_into("!I", template, 4, i)
        observers.append((observer, bytes(template)))
    deadline = time.monotonic() + timeout
    waiting = observers
    while waiting and time.monotonic() < deadline:
        for count, (observer, request) in enumerate(waiting, 1):  # first send, or a retransmission (same id)
            assert observer.transport is not None
            observer.transport.sendto(request)
            if count % 50 == 0:
                await asyncio.sleep(0.005)  # stay under the gateway's UDP receive buffer
        await asyncio.sleep(2.0)
        waiting = [(o, r) for o, r in waiting if o.registered is not None and not o.registered.done()]
    codes = Counter(o.code for o, _ in observers)
    ready.put({"observing": codes.get(CONTENT, 0), "unanswered": len(waiting),
               "codes": {f"{c >> 5}.{c & 31:02d}": n for c, n in codes.items() if c}})
    while not hold.is_set():
        await asyncio.sleep(0.1)
    for observer, _ in observers:
        if observer.transport is not None:
            observer.transport.close()


def hold_observers(host: str, port: int, tokens: list[str], hold: Any, ready: Any, timeout: float = 60.0) -> None:
    """Observe ``/api/v1/{token}/attributes`` for each token, report on ``ready``, hold until ``hold`` is set."""
    _raise_file_limit(len(tokens) + 64)
    asyncio.run(_observe(host, port, tokens, hold, ready, timeout))


def process_cpu_count() -> int:
    return len(os.sched_getaffinity(0))
