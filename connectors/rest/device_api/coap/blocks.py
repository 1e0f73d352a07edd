"""Attribute notifications larger than one datagram, sent block-wise (RFC 7959 §2.6 and §3.4).

aiocoap does not send notifications block-wise (its issue #177), and an attribute update split into
whole keys (messages.split_update) still leaves a single value that does not fit. Such a notification
carries block 0 of its representation with Block2 (more), Size2 and an ETag; the device fetches the
rest with GETs of the same resource and query, Block2 1, 2, ... and no Observe, as aiocoap's and
libcoap's clients do on their own. Those GETs are served here from the representation kept for the
observe request. The observation sends its next notification only once the device fetched the last
block, so the representation never changes under a transfer; a device that stops fetching loses
the observation, and the update goes back to its queue, as for an unacknowledged notification.
"""
from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from aiocoap import Message

from connectors.rest.device_api.coap.messages import JSON_FORMAT, block_of


def block_key(request: Message) -> Hashable:
    """What the observe request and the device's block requests that follow it have in common."""
    remote = request.remote
    return (getattr(remote, "blockwise_key", remote), request.code, tuple(request.opt.uri_path),
            tuple(request.opt.uri_query))


@dataclass(eq=False)
class Transfer:
    """One representation being fetched block by block."""

    payload: bytes
    size_exp: int
    etag: bytes
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False

    def block(self, number: int, size_exp: int | None = None) -> Message:
        message = block_of(self.payload, number, self.size_exp if size_exp is None else size_exp)
        if message.code.is_successful():
            message.opt.content_format = JSON_FORMAT
            message.opt.etag = self.etag
        return message


class NotificationBlocks:
    """The block-wise notifications in flight, by :func:`block_key`. Event loop thread only."""

    def __init__(self) -> None:
        self._transfers: dict[Hashable, Transfer] = {}
        self.sent = 0  # notifications sent block-wise

    def start(self, key: Hashable, payload: bytes, size_exp: int) -> Transfer:
        """Keep ``payload`` for the device's block requests; block 0 is ``transfer.block(0)``."""
        transfer = Transfer(payload, size_exp, zlib.crc32(payload).to_bytes(4, "big"))
        self._transfers[key] = transfer
        self.sent += 1
        return transfer

    def serve(self, request: Message) -> Message | None:
        """The block a device asks for after a block-wise notification; None for any other request."""
        block2 = request.opt.block2
        if block2 is None or block2.block_number == 0 or request.opt.observe is not None:
            return None
        transfer = self._transfers.get(block_key(request))
        if transfer is None:
            return None
        # the device may ask for smaller blocks than block 0 had (RFC 7959 §2.4), never larger
        size_exp = min(block2.size_exponent, transfer.size_exp)
        number = block2.block_number * 2 ** (block2.size_exponent - size_exp)
        message = transfer.block(number, size_exp)
        if message.opt.block2 is not None and not message.opt.block2.more:
            transfer.done = True
        transfer.progress.set()
        return message

    async def fetched(self, transfer: Transfer, idle_seconds: float, ended: Callable[[], bool]) -> bool:
        """Wait until the device fetched the last block; False when it asked for none in
        ``idle_seconds``, or once ``ended()`` (the observation was replaced or cancelled)."""
        deadline = time.monotonic() + idle_seconds
        while not transfer.done:
            if ended() or time.monotonic() >= deadline:
                return False
            try:
                await asyncio.wait_for(transfer.progress.wait(), min(1.0, deadline - time.monotonic()))
            except TimeoutError:
                continue
            transfer.progress.clear()
            deadline = time.monotonic() + idle_seconds
        return True

    def end(self, key: Hashable, transfer: Transfer) -> None:
        """Forget ``transfer`` (a newer one under the same key stays)."""
        if self._transfers.get(key) is transfer:
            del self._transfers[key]

    def __len__(self) -> int:
        return len(self._transfers)
