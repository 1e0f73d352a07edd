"""CoAP observations of ``/attributes`` and ``/rpc``: ThingsBoard's semantics, without its losses.

One attribute and one RPC observation per device; a new one replaces the old, which gets 2.02.
Notifications are confirmable and sent one at a time: an RPC counts as delivered when the device
acknowledged it, and the next goes only then. When a notification is reset or never acknowledged,
aiocoap ends the exchange (cancelling the task); what it carried goes back to the device's mailbox
for the next observer or poll. An idle observation gets a check notification every
``observeCheckSeconds``, so a device that went away silently is found and dropped. A notification
larger than its block size goes block-wise (blocks.py).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiocoap import Message, Unreliable
from aiocoap.numbers.codes import Code

from connectors.rest.device_api.coap.acks import AckWatch
from connectors.rest.device_api.coap.blocks import NotificationBlocks, Transfer, block_key
from connectors.rest.device_api.coap.messages import (
    JSON_FORMAT,
    Transmission,
    block_size_exp,
    encode_json,
    split_update,
)
from connectors.rest.device_api.mailbox import Mailboxes, QueuedRpc

#: what a notification waits for its ACK beyond MAX_TRANSMIT_WAIT, when aiocoap gives up (93 s by default)
ACK_WAIT_MARGIN_SECONDS = 7.0
_UNRELIABLE = Unreliable()


class TooManyObservations(Exception):
    """``maxObservations`` are active already."""


@dataclass(eq=False)
class Observation:
    """One observe exchange: the device, what it observes and how it ends."""

    kind: str  # "attributes" | "rpc"
    device: str
    remote: Any
    token: bytes
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: str = ""  # "replaced" | "deregistered" | "stopping"
    number: int = 0  # the Observe option of the last response sent
    delivered: int = 0

    def end(self, reason: str) -> None:
        self.ended_by = reason
        self.wake.set()

    def same_client(self, remote: Any, token: bytes) -> bool:
        return self.remote == remote and self.token == token


class Observations:
    """The active observations, by (kind, device), capped in total. Event loop thread only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[tuple[str, str], Observation] = {}
        self.refused = 0
        self.replaced = 0
        self.dropped = 0  # ended because a notification was not acknowledged

    def add(self, observation: Observation) -> None:
        """Register ``observation``; the one it replaces is told to end with 2.02."""
        key = (observation.kind, observation.device)
        old = self._active.get(key)
        if old is None and len(self._active) >= self.limit:
            self.refused += 1
            raise TooManyObservations()
        if old is not None:
            self.replaced += 1
            old.end("replaced")
        self._active[key] = observation

    def remove(self, observation: Observation) -> None:
        key = (observation.kind, observation.device)
        if self._active.get(key) is observation:
            del self._active[key]

    def find(self, kind: str, device: str) -> Observation | None:
        return self._active.get((kind, device))

    def end_all(self) -> None:
        for observation in list(self._active.values()):
            observation.end("stopping")

    def count(self, kind: str | None = None) -> int:
        return sum(1 for k, _ in list(self._active) if kind is None or k == kind)


class NotificationLost(Exception):
    """A notification was reset (``reset``), or not acknowledged in time."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "not acknowledged")
        self.reset = reset


class Notifier:
    """Sends one observation's responses into its aiocoap pipe, numbering them."""

    def __init__(self, pipe: Any, observation: Observation, acks: AckWatch,
                 transmission: Transmission | None = None, blocks: NotificationBlocks | None = None,
                 count_sent: Callable[[int], None] | None = None) -> None:
        """``count_sent(size)`` is told the payload size of every update or RPC the device received."""
        self.pipe = pipe
        self.count_sent = count_sent or (lambda size: None)
        self.observation = observation
        self.acks = acks
        self.blocks = blocks if blocks is not None else NotificationBlocks()
        self.size_exp = block_size_exp(pipe.request)  # the device's Block2 size, if it asked for one
        self.block_key = block_key(pipe.request)  # what the device's requests for the next blocks match
        self.transmission = transmission or Transmission(reliable=True)
        # the first and the last response: CON when the observe request was, as any response
        self.response_transmission = Transmission(self.transmission.ACK_TIMEOUT, self.transmission.MAX_RETRANSMIT)
        self.ack_wait = self.transmission.MAX_TRANSMIT_WAIT + ACK_WAIT_MARGIN_SECONDS
        self.unacknowledged = False  # aiocoap ended the exchange while a notification awaited its ACK

    def alive(self) -> bool:
        """False once aiocoap ended the exchange (a cancel on the same token, RST, retransmissions
        exhausted). aiocoap then also cancels the task, but not always before the next update is
        taken, so every send checks first and nothing is handed to a dead exchange."""
        return getattr(self.pipe, "_event_callbacks", None) is not False

    def first(self, message: Message) -> None:
        """The response to the observe request itself (Observe 0, piggybacked when it is quick)."""
        message.opt.observe = 0
        message.transport_tuning = self.response_transmission
        self.pipe.add_response(message, is_last=False)

    async def notify(self, message: Message) -> None:
        """A confirmable notification; returns once acknowledged, else raises NotificationLost."""
        if not self.alive():
            raise NotificationLost(reset=True)
        self.observation.number = (self.observation.number + 1) & 0xFFFFFF
        message.opt.observe = self.observation.number
        message.transport_tuning = self.transmission
        self.pipe.add_response(message, is_last=False)
        acked = self.acks.expect(message)
        try:
            if not await asyncio.wait_for(acked, self.ack_wait):
                raise NotificationLost(reset=True)
        except TimeoutError:
            raise NotificationLost(reset=False) from None
        except asyncio.CancelledError:  # aiocoap gave up after its retransmissions and ended the exchange
            self.unacknowledged = True
            raise
        finally:
            self.acks.forget(message)

    async def attributes(self, update: dict[str, Any], first: bool = False) -> None:
        """Send ``update`` (as the ``first`` response, or as a notification), block-wise when it is
        larger than a block; returns once the device has all of it, else raises NotificationLost."""
        payload = encode_json(update)
        transfer: Transfer | None = None
        if len(payload) > 2 ** (self.size_exp + 4):
            transfer = self.blocks.start(self.block_key, payload, self.size_exp)
            message = transfer.block(0)
        else:
            message = Message(code=Code.CONTENT, payload=payload, content_format=JSON_FORMAT)
        try:
            if first:
                self.first(message)
            else:
                await self.notify(message)
            if transfer is not None and not await self.blocks.fetched(
                    transfer, self.ack_wait, lambda: bool(self.observation.ended_by)):
                raise NotificationLost(reset=False)  # the device stopped fetching blocks, or was replaced
            if update:  # not the empty check notification
                self.count_sent(len(payload))
        finally:
            if transfer is not None:
                self.blocks.end(self.block_key, transfer)

    def last(self, code: Code, reliable: bool = True) -> None:
        """End the observation with a final response without Observe (2.02 when replaced or cancelled)."""
        if not self.alive():
            return
        message = Message(code=code)
        message.transport_tuning = self.response_transmission if reliable else _UNRELIABLE
        self.pipe.add_response(message, is_last=True)


async def wait_for_work(observation: Observation, check_seconds: float) -> bool:
    """Wait until something arrived for the device or the observation ends; False at the check time."""
    try:
        await asyncio.wait_for(observation.wake.wait(), check_seconds)
    except TimeoutError:
        return False
    observation.wake.clear()
    return True


def listener_for(loop: asyncio.AbstractEventLoop, observation: Observation) -> Callable[[], None]:
    """A mailbox listener (called on the MQTT thread) that wakes ``observation`` on the loop."""

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while stopping
            loop.call_soon_threadsafe(observation.wake.set)

    return wake


async def serve_attributes(notifier: Notifier, mailboxes: Mailboxes, first: dict[str, Any],
                           check_seconds: float) -> None:
    """Attribute notifications until the observation ends: ``first`` (split to fit datagrams) as the
    response, then every update as it arrives; what was not acknowledged goes back to the mailbox."""
    observation = notifier.observation
    await _send_chunks(notifier, mailboxes, split_update(first), first=True)
    while notifier.alive():
        if observation.ended_by:
            notifier.last(Code.DELETED)
            return
        update = mailboxes.take_attributes(observation.device)
        if update is not None:
            await _send_chunks(notifier, mailboxes, split_update(update))
            continue
        if not await wait_for_work(observation, check_seconds):
            await notifier.attributes({})  # the check: is anyone still there?


async def _send_chunks(notifier: Notifier, mailboxes: Mailboxes, chunks: list[dict[str, Any]],
                       first: bool = False) -> None:
    """``chunks`` one after the other (the first as the observe response when ``first``); what was
    not delivered goes back to the mailbox."""
    for index, chunk in enumerate(chunks):
        try:
            await notifier.attributes(chunk, first=first and index == 0)
            notifier.observation.delivered += 1
        except BaseException:
            rest: dict[str, Any] = {}
            for undelivered in chunks[index:]:
                deleted = rest.get("deleted", []) + undelivered.get("deleted", [])
                rest.update(undelivered)
                if deleted:
                    rest["deleted"] = deleted
            mailboxes.restore_attributes(notifier.observation.device, rest)
            raise


async def serve_rpc(notifier: Notifier, mailboxes: Mailboxes, check_seconds: float) -> None:
    """RPC notifications until the observation ends: 2.03 first, then each RPC when the one before
    it was acknowledged. An RPC not acknowledged is first in line again."""
    observation = notifier.observation
    notifier.first(Message(code=Code.VALID))
    while notifier.alive():
        if observation.ended_by:
            notifier.last(Code.DELETED)
            return
        rpc = mailboxes.lease_rpc(observation.device)
        if rpc is not None:
            await _deliver_rpc(notifier, mailboxes, rpc)
            continue
        if not await wait_for_work(observation, check_seconds):
            await notifier.notify(Message(code=Code.VALID))


async def _deliver_rpc(notifier: Notifier, mailboxes: Mailboxes, rpc: QueuedRpc) -> None:
    device = notifier.observation.device
    message = Message(code=Code.CONTENT, content_format=JSON_FORMAT,
                      payload=encode_json({"id": rpc.request_id, "method": rpc.method, "params": rpc.params}))
    try:
        await notifier.notify(message)
    except BaseException:
        mailboxes.return_rpc(device, rpc)
        raise
    mailboxes.confirm_rpc(device, rpc)
    notifier.count_sent(len(message.payload))
    notifier.observation.delivered += 1


async def observe(observations: Observations, notifier: Notifier, mailboxes: Mailboxes,
                  loop: asyncio.AbstractEventLoop, serve: Callable[[], Awaitable[None]]) -> None:
    """Run ``serve`` for a registered observation with its mailbox listener, and always clean up.

    An observation whose notification went unacknowledged (while aiocoap still keeps the exchange)
    is closed with one non-confirmable 5.03: a device that was only slow learns to observe again.
    """
    observation = notifier.observation
    listener = listener_for(loop, observation)
    mailboxes.add_listener(observation.device, listener)
    try:
        await serve()
    except NotificationLost as lost:
        if observation.ended_by:  # replaced or cancelled while the device fetched blocks
            notifier.last(Code.DELETED)
        else:
            observations.dropped += 1
            if not lost.reset:
                notifier.last(Code.SERVICE_UNAVAILABLE, reliable=False)
    except asyncio.CancelledError:
        if notifier.unacknowledged:
            observations.dropped += 1
        raise
    finally:
        mailboxes.remove_listener(observation.device, listener)
        observations.remove(observation)
