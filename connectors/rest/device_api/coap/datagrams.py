"""What aiocoap's UDP transport does with hostile or large datagrams, corrected for the device API.

Three things in aiocoap 0.4 (found by tests/e2e/test_coap_bad_input.py), fixed here on the one
server socket, without touching anything else of aiocoap:

* it reads each datagram into a 4096-byte buffer and ignores MSG_TRUNC, so a larger datagram is
  cut short silently and its first 4 KB handled as if complete (a 10 KB telemetry post was
  answered "not valid JSON", and a cut that ends on valid JSON would be stored changed): the
  buffer is made large enough for any UDP datagram, so ``maxPayloadBytes`` decides (4.13);
* an option that is not valid UTF-8 (a Uri-Path byte 0xff) escapes its parser as a
  UnicodeDecodeError, which asyncio logs as a 25-line ERROR traceback per datagram: such
  datagrams are dropped like every other unparsable one;
* it takes a token length of 9-15 (reserved, RFC 7252 §3: a message format error) as that many
  bytes, and a token cut off by the end of the datagram as a shorter token; both were answered,
  a telemetry post with a 15-byte token even stored: such datagrams are now dropped unanswered;
* it logs a WARNING for every unparsable datagram, a line per packet of a flood: they are counted
  (``coap_unparsable`` on /metrics) and the log gets one line per minute at most.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

MAX_TOKEN_LENGTH = 8
#: larger than any UDP payload over IPv4 or IPv6 (65,507 / 65,527 bytes): nothing is ever cut
RECEIVE_BUFFER = 65_536
UNPARSABLE_LOG_SECONDS = 60.0
_UNPARSABLE_PREFIX = "Ignoring unparsable message"


class UnparsableCounter(logging.Filter):
    """Counts aiocoap's 'Ignoring unparsable message' records; lets one through per interval."""

    def __init__(self, counters: MutableMapping[str, int], interval: float = UNPARSABLE_LOG_SECONDS,
                 now: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.counters = counters
        self.interval = interval
        self._now = now
        self._last_logged: float | None = None

    def count(self) -> None:
        self.counters["coap_unparsable"] = self.counters.get("coap_unparsable", 0) + 1

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_UNPARSABLE_PREFIX):
            return True
        self.count()
        now = self._now()
        if self._last_logged is not None and now - self._last_logged < self.interval:
            return False
        self._last_logged = now
        record.msg = ("CoAP: ignoring unparsable datagrams (the first from %s; counted as "
                      "coap_unparsable on /metrics, logged once a minute)")
        return True


def harden(context: Any, counters: MutableMapping[str, int], log: logging.Logger) -> None:
    """Apply the corrections above to every UDP interface of the aiocoap server ``context``."""
    unparsable = UnparsableCounter(counters)
    log.addFilter(unparsable)
    for interface in _udp_interfaces(context):
        transport = getattr(interface, "transport", None)
        if transport is not None:
            transport.max_size = RECEIVE_BUFFER
        original = interface.datagram_msg_received

        def received(data: bytes, ancdata: Any, flags: int, address: Any, _original: Any = original) -> None:
            if bad_token_length(data):
                unparsable.count()
                return
            try:
                _original(data, ancdata, flags, address)
            except Exception:  # noqa: BLE001 - only decoding can raise here: dispatch catches its own
                unparsable.count()

        interface.datagram_msg_received = received


def bad_token_length(data: bytes) -> bool:
    """True for a datagram whose token length is reserved or longer than the datagram."""
    if not data:
        return False  # aiocoap drops it as too short
    token_length = data[0] & 0x0F
    return token_length > MAX_TOKEN_LENGTH or len(data) < 4 + token_length


def _udp_interfaces(context: Any) -> list[Any]:
    found = []
    for request_interface in getattr(context, "request_interfaces", []):
        message_interface = getattr(getattr(request_interface, "token_interface", None), "message_interface", None)
        if message_interface is not None and hasattr(message_interface, "datagram_msg_received"):
            found.append(message_interface)
    if not found:
        raise RuntimeError("this aiocoap version has no UDP message interface to harden")
    return found
