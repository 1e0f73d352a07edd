"""The fast path for the CoAP device API's most frequent request: a confirmable POST of telemetry or
attributes, answered with a piggybacked 2.01 once stored.

aiocoap spends most of the time of such a request on its general machinery (option objects, an
exchange, a task, a timer per message for deduplication: bench/RESULTS.md, "CoAP"). This module sits
in front of it, on aiocoap's UDP endpoint, and serves the plain case straight from the datagram:

    CON, code POST, version 1, only Uri-Path and Content-Format (none, 0 or 50) options,
    path ``api/v1/{token}/telemetry|attributes``, a payload within ``maxPayloadBytes``,
    a token a device has, a body that parses, an address within its rate limit.

Anything else - another method, option, path or type, an ACK or RST, a Block1 transfer, an unknown
token, a bad body, a rate-limited address, a multicast destination - is handed to aiocoap unchanged,
which answers it exactly as before. The answer to a request the fast path took is the same as the
site's: 2.01 with no payload, or the same error (5.03 with Max-Age when storage refuses it).

Deduplication (RFC 7252 §4.5): a CON seen again with the same source endpoint and message id is never
stored twice. While it is being stored the copy is ignored (as aiocoap does); once answered, the same
answer is sent again. The exchanges are remembered per source endpoint, its last few for at most
EXCHANGE_LIFETIME (exchanges.py: why, the bounds and the memory), so a retransmission is recognised
however fast other clients post. A datagram the fast path handed to aiocoap is remembered too, so its
copies go to aiocoap's own deduplication; one with a token no device has is not (aiocoap answers its
copies from its own cache), so unauthenticated datagrams cannot push real devices' exchanges out.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from connectors.rest.device_api.coap.batcher import StoreBatcher
from connectors.rest.device_api.coap.exchanges import (
    DEFAULT_PER_SOURCE,
    DEFAULT_SOURCES,
    EXCHANGE_LIFETIME,
    Answer,
    RecentExchanges,
    Source,
)
from connectors.rest.device_api.coap.messages import diagnostic, for_exception
from connectors.rest.device_api.coap.ratelimit import AddressLimiter
from connectors.rest.device_api.payloads import BadPayload, attributes_data, telemetry_data
from connectors.rest.device_api.service import DeviceApi

#: datagrams read per wake-up of the event loop (aiocoap reads one, then goes back to epoll)
DRAIN = 64
_CON_POST = 0x02  # code 0.02
_URI_PATH, _CONTENT_FORMAT = 11, 12
_CREATED = int(Code.CREATED)
_HANDED = -1  # remembered: aiocoap has this exchange
_IN_PROGRESS = 0  # remembered: being stored, no answer yet
_PARSERS = {"telemetry": (telemetry_data, "telemetry_posts"), "attributes": (attributes_data, "attribute_posts")}
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


class FastPosts:
    """Serves plain CON telemetry/attribute posts ahead of aiocoap's UDP endpoint (see the module doc)."""

    def __init__(self, api: DeviceApi, batcher: StoreBatcher, limiter: AddressLimiter, counters: dict[str, int],
                 max_payload: int, log: logging.Logger, sources: int = DEFAULT_SOURCES,
                 per_source: int = DEFAULT_PER_SOURCE, now: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.batcher = batcher
        self.limiter = limiter
        self.counters = counters
        self.max_payload = max_payload
        self.log = log
        self.recent = RecentExchanges(sources, per_source, EXCHANGE_LIFETIME, now)
        self._interface: Any = None
        self._pass_on: Callable[..., None] | None = None
        self.closed = False
        counters.setdefault("coap_fast_posts", 0)

    def install(self, context: Any) -> bool:
        """Put the fast path in front of ``context``'s UDP endpoint; False when it has none (nothing changes)."""
        for tokens in getattr(context, "request_interfaces", ()):
            messages = getattr(getattr(tokens, "token_interface", None), "message_interface", None)
            if messages is not None and hasattr(messages, "datagram_msg_received"):
                self._interface = messages
                self._pass_on = messages.datagram_msg_received
                messages.datagram_msg_received = self.datagram_msg_received
                self._read_many(messages)
                return True
        return False

    def _read_many(self, messages: Any) -> None:
        """Read up to DRAIN queued datagrams per wake-up instead of one: after aiocoap's own read (which also
        empties the socket's error queue), the rest straight from the socket. Left as aiocoap has it when its
        transport is not the one this was written against (aiocoap 0.4's recvmsg transport)."""
        transport = getattr(messages, "transport", None)
        read_ready = getattr(transport, "_read_ready", None)
        loop = getattr(transport, "_loop", None)
        if read_ready is None or loop is None or not hasattr(transport, "get_extra_info"):
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        fileno, size = sock.fileno(), int(getattr(transport, "max_size", 4096))

        def ready() -> None:
            read_ready()
            for _ in range(DRAIN - 1):
                if self.closed or getattr(transport, "_protocol", None) is None:
                    return
                try:
                    data, ancdata, flags, address = sock.recvmsg(size, 1024)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    messages.error_received(exc)
                    return
                self.datagram_msg_received(data, ancdata, flags, address)

        loop.remove_reader(fileno)
        loop.add_reader(fileno, ready)

    # ------------------------------------------------------------- receive

    def datagram_msg_received(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int,
                              address: Any) -> None:
        """aiocoap's receive callback, wrapped: serve the datagram here or pass it on unchanged."""
        assert self._pass_on is not None
        if len(data) < 4 or data[1] != _CON_POST or data[0] & 0xF0 != 0x40 or self.closed:
            self._pass_on(data, ancdata, flags, address)
            return
        parsed = _parse(data, self.max_payload)
        if parsed is None or _multicast(ancdata):
            self._pass_on(data, ancdata, flags, address)
            return
        source, mid = (address[0], address[1]), data[2] << 8 | data[3]
        seen = self.recent.get(source, mid)
        if seen is not None:
            self._again(seen, data, ancdata, flags, address)
            return
        token, feature, body = parsed
        device = self.api.registry.lookup(token)
        if device is None:  # not remembered: see the module doc
            self._pass_on(data, ancdata, flags, address)
            return
        key = (source, mid)
        if not self.limiter.allow(str(address[0])):
            self._hand_over(key, data, ancdata, flags, address)
            return
        parse, counter = _PARSERS[feature]
        try:
            converted = parse(body, device.name, device.type)
        except BadPayload:
            self._hand_over(key, data, ancdata, flags, address)  # the site answers 4.00 and counts it
            return
        self.counters["coap_requests"] += 1
        self.counters["coap_fast_posts"] += 1
        self.api.received_bytes(len(body))
        self.api.count(counter)
        self.recent.put(source, mid, _IN_PROGRESS)
        self.batcher.submit(converted, lambda error: self._stored(key, data, ancdata, address, error))

    def _again(self, answer: Answer, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int,
               address: Any) -> None:
        """A copy of an exchange seen before: ignore it, answer it again, or give it to aiocoap."""
        if answer == _HANDED:
            assert self._pass_on is not None
            self._pass_on(data, ancdata, flags, address)
        elif answer != _IN_PROGRESS:
            self._send(_answer(data, answer), ancdata, address)

    def _hand_over(self, key: tuple[Source, int], data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int,
                   address: Any) -> None:
        assert self._pass_on is not None
        self.recent.put(*key, _HANDED)
        self._pass_on(data, ancdata, flags, address)

    # ------------------------------------------------------------- answer

    def _stored(self, key: tuple[Source, int], data: bytes, ancdata: list[tuple[int, int, bytes]], address: Any,
                error: BaseException | None) -> None:
        answer: Answer = _CREATED
        if error is not None:
            response = for_exception(error) if isinstance(error, Exception) else None
            if response is None:
                self.log.error("CoAP device API: storing a post failed: %s", error)
                response = diagnostic(Code.INTERNAL_SERVER_ERROR, "internal error; see the gateway log")
            answer = _error_answer(data, response)
        self.recent.answer(*key, answer)
        self._send(_answer(data, answer), ancdata, address)

    def _send(self, datagram: bytes, ancdata: list[tuple[int, int, bytes]], address: Any) -> None:
        transport = getattr(self._interface, "transport", None)
        if self.closed or transport is None:
            return
        reply = [item for item in ancdata if item[:2] == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)]
        try:
            transport.sendmsg(datagram, reply, 0, address)
        except Exception as exc:  # noqa: BLE001 - a send error is the device's loss, as with aiocoap
            self.log.debug("CoAP fast path: send failed: %s", exc)

    def __len__(self) -> int:
        """The number of exchanges remembered."""
        return self.recent.exchanges()


def _parse(data: bytes, max_payload: int) -> tuple[str, str, bytes] | None:
    """(token, feature, body) of a plain post (see the module doc), or None for anything else."""
    tkl = data[0] & 0x0F
    if tkl > 8:
        return None
    at, end, number = 4 + tkl, len(data), 0
    path: list[bytes] = []
    while at < end:
        head = data[at]
        if head == 0xFF:
            at += 1
            break
        delta, length = head >> 4, head & 0x0F
        at += 1
        if delta == 13:
            if at >= end:
                return None
            delta = data[at] + 13
            at += 1
        elif delta > 12:
            return None  # 14: options numbered past Content-Format; 15: malformed
        if length == 13:
            if at >= end:
                return None
            length = data[at] + 13
            at += 1
        elif length > 12:
            return None  # long option values (not a path segment a token needs, or malformed)
        number += delta
        if at + length > end:
            return None
        if number == _URI_PATH:
            path.append(data[at:at + length])
        elif number != _CONTENT_FORMAT or length > 1 or (length == 1 and data[at] not in (0, 50)):
            return None
        at += length
    else:
        return None  # no payload marker: an empty body, which the site answers with 4.00
    body = data[at:]
    if not body or len(body) > max_payload or len(path) != 4 or path[0] != b"api" or path[1] != b"v1":
        return None
    feature = path[3].decode("ascii", "replace")
    if feature not in _PARSERS:
        return None
    try:
        token = path[2].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return token, feature, body


def _multicast(ancdata: list[tuple[int, int, bytes]]) -> bool:
    """True when the datagram was sent to a multicast address (answers to those are aiocoap's business)."""
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 16:
            if value[0] == 0xFF or (value[:12] == _V4_MAPPED and 224 <= value[12] <= 239):
                return True
    return False


def _answer(request: bytes, answer: Answer) -> bytes:
    """The piggybacked answer to ``request``: an ACK with its message id and token."""
    if isinstance(answer, bytes):
        return answer
    tkl = request[0] & 0x0F
    return bytes((0x60 | tkl, answer)) + request[2:4 + tkl]


def _error_answer(request: bytes, response: Message) -> bytes:
    tkl = request[0] & 0x0F
    response.mtype = Type.ACK
    response.mid = int.from_bytes(request[2:4], "big")
    response.token = request[4:4 + tkl]
    return bytes(response.encode())
