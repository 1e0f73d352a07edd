"""CoAP messages of the device API: responses and error codes, query parameters, Block2 slices,
attribute updates split to fit one datagram, and the transmission parameters of the gateway's own
confirmable messages."""
from __future__ import annotations

import json
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.constants import TransportTuning
from aiocoap.optiontypes import BlockOption

from connectors.rest.device_api.operations import NotFound, Unauthorized, Unavailable, UpstreamTimeout
from connectors.rest.device_api.payloads import BadPayload

JSON_FORMAT = 50
TEXT_FORMAT = 0
#: content formats a request body may declare (none, text/plain, application/json)
ACCEPTED_FORMATS = (None, TEXT_FORMAT, JSON_FORMAT)
#: payload bytes that fit one datagram on any path (RFC 7252 §4.6: 1152-byte messages, 1024 of payload)
DATAGRAM_PAYLOAD = 1024
#: diagnostic payloads are cut to this (they must stay small next to the request)
MAX_DIAGNOSTIC = 200


class Transmission(TransportTuning):
    """RFC 7252 §4.8 parameters for the CON messages the gateway sends (``ackTimeoutSeconds``,
    ``maxRetransmit``); aiocoap retransmits each message by the parameters the message carries.
    ``reliable``: True forces CON (notifications), None leaves aiocoap's choice (a response is CON
    when its request was)."""

    def __init__(self, ack_timeout: float = 2.0, max_retransmit: int = 4, reliable: bool | None = None) -> None:
        self.ACK_TIMEOUT = ack_timeout
        self.MAX_RETRANSMIT = max_retransmit
        self.reliability = reliable


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def empty(code: Code) -> Message:
    return Message(code=code)


def json_message(code: Code, value: Any) -> Message:
    return Message(code=code, payload=encode_json(value), content_format=JSON_FORMAT)


def diagnostic(code: Code, text: str, max_age: int | None = None) -> Message:
    """An error with a short human-readable reason (RFC 7252 §5.5.2 diagnostic payload)."""
    message = Message(code=code, payload=text.encode("utf-8")[:MAX_DIAGNOSTIC], content_format=TEXT_FORMAT)
    if max_age is not None:
        message.opt.max_age = max_age
    return message


def no_larger(response: Message, request: Message) -> Message:
    """``response`` with its diagnostic cut so that the answer is no larger than ``request``.

    For answers to requests that carry no valid token (provisioning): the source address of such a
    request may be spoofed, and a UDP server must not answer it with more than it received (RFC 7252
    §11.3). JSON answers (provisioning's own) are left whole.
    """
    payload = response.payload
    if not payload or response.opt.content_format != TEXT_FORMAT:
        return response
    token = len(request.token)
    received = 4 + token + len(request.opt.encode()) + (1 + len(request.payload) if request.payload else 0)
    room = received - (4 + token + len(response.opt.encode()) + 1)
    if room <= 0:
        response.payload = b""
        response.opt.content_format = None
    elif room < len(payload):
        response.payload = payload[:room].decode("utf-8", "ignore").encode("utf-8")
    return response


def for_exception(exc: Exception) -> Message | None:
    """The device API's outcome as a CoAP error; None for an exception that is not an outcome."""
    if isinstance(exc, Unauthorized):
        return empty(Code.UNAUTHORIZED)
    if isinstance(exc, BadPayload):
        return diagnostic(Code.BAD_REQUEST, str(exc))
    if isinstance(exc, NotFound):
        return diagnostic(Code.NOT_FOUND, str(exc))
    if isinstance(exc, Unavailable):
        return diagnostic(Code.SERVICE_UNAVAILABLE, exc.reason, max_age=exc.retry_after)
    if isinstance(exc, UpstreamTimeout):
        return diagnostic(Code.GATEWAY_TIMEOUT, str(exc))
    return None


def query(request: Message) -> dict[str, list[str]]:
    """``?a=1&b=2&b=3`` → ``{"a": ["1"], "b": ["2", "3"]}`` (Uri-Query options, each ``k=v``)."""
    params: dict[str, list[str]] = {}
    for item in request.opt.uri_query:
        key, _, value = item.partition("=")
        params.setdefault(key, []).append(value)
    return params


def first(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0] if values else None


def block_size_exp(request: Message) -> int:
    """The Block2 size exponent to answer with: the client's, capped at what one datagram carries."""
    cap = min(6, getattr(request.remote, "maximum_block_size_exp", 6))
    block2 = request.opt.block2
    return min(block2.size_exponent, cap) if block2 is not None else cap


def block_of(data: bytes, number: int, size_exp: int, total: int | None = None, offset: int = 0) -> Message:
    """A 2.05 carrying block ``number`` of a representation; ``data`` starts at byte ``offset`` of it
    (the whole representation when 0). A representation that fits one block is sent whole."""
    size = 2 ** (size_exp + 4)
    total = len(data) + offset if total is None else total
    if number == 0 and total <= size:
        return Message(code=Code.CONTENT, payload=data)
    start = number * size - offset
    if start < 0 or number * size >= max(total, 1) and number > 0:
        return diagnostic(Code.BAD_OPTION, "Block2 past the end of the representation")
    message = Message(code=Code.CONTENT, payload=data[start:start + size])
    message.opt.block2 = BlockOption.BlockwiseTuple(number, (number + 1) * size < total, size_exp)
    if number == 0:
        message.opt.size2 = total
    return message


def split_update(update: dict[str, Any], limit: int = DATAGRAM_PAYLOAD) -> list[dict[str, Any]]:
    """An attribute update as flat maps that each encode within ``limit`` bytes, keys in order.

    A device applies each notification as a change, so several smaller ones leave it in the same
    state as one large one. A single key too large for ``limit`` goes alone - it cannot be split
    without changing its value - and is then sent block-wise (blocks.py).
    """
    if len(encode_json(update)) <= limit:
        return [update]
    chunks: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    size = 2
    items = [(k, v) for k, v in update.items() if k != "deleted"]
    deleted = update.get("deleted")
    if isinstance(deleted, list):
        items += [("deleted", [name]) for name in deleted]
    elif "deleted" in update:
        items.append(("deleted", deleted))
    for key, value in items:
        part = len(encode_json({key: value})) - 1  # `"k":v,` within the braces
        if key == "deleted" and "deleted" in current and isinstance(value, list):
            part = len(encode_json(value[0])) + 1
        if current and size + part > limit:
            chunks.append(current)
            current, size = {}, 2
        if key == "deleted" and isinstance(value, list) and "deleted" in current:
            current["deleted"] = current["deleted"] + value
        else:
            current[key] = value
        size += part
    if current:
        chunks.append(current)
    return chunks
