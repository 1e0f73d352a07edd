"""The CoAP front of the device API: ThingsBoard's resource tree and codes over the shared operations.

``/api/v1/{token}/{telemetry|attributes|rpc[/{id}]|claim}``, ``/api/v1/provision``, ``/fw/{token}`` and
``/sw/{token}``. aiocoap hands every request to :meth:`CoapSite.render_to_pipe` (its stable low-level
interface), so each one is parsed once, with no copy, and observations write their own responses.
Blocking operations run on executor threads; posts are stored in batches (batcher.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiocoap import Message
from aiocoap.blockwise import Block1Spool, Block2Cache
from aiocoap.error import RenderableError
from aiocoap.numbers.codes import Code

from connectors.rest.device_api.coap.acks import AckWatch
from connectors.rest.device_api.coap.batcher import StoreBatcher
from connectors.rest.device_api.coap.blocks import NotificationBlocks
from connectors.rest.device_api.coap.fastpath import FastPosts
from connectors.rest.device_api.coap.messages import (
    ACCEPTED_FORMATS,
    Transmission,
    block_of,
    block_size_exp,
    diagnostic,
    empty,
    first,
    for_exception,
    json_message,
    no_larger,
    query,
)
from connectors.rest.device_api.coap.observe import (
    Notifier,
    Observation,
    Observations,
    TooManyObservations,
    observe,
    serve_attributes,
    serve_rpc,
)
from connectors.rest.device_api.coap.ratelimit import AddressLimiter
from connectors.rest.device_api.coap.validation import block1_misuse, unsupported_options
from connectors.rest.device_api.model import CoapConfig
from connectors.rest.device_api.operations import DeviceOperations, Unavailable
from connectors.rest.device_api.registry import Device
from connectors.rest.device_api.service import DeviceApi

T = TypeVar("T")
_FEATURES = ("telemetry", "attributes", "rpc", "claim")
_PROVISION = ("api", "v1", "provision")


class CoapSite:
    """Serves one DeviceApi over CoAP; built on the event loop's thread, used only there."""

    def __init__(self, api: DeviceApi, config: CoapConfig, log: logging.Logger) -> None:
        self.api = api
        self.config = config
        self.ops = DeviceOperations(api)
        self.log = log
        self.limiter = AddressLimiter(config.rate_limit)
        self.observations = Observations(config.max_observations)
        self.batcher = StoreBatcher(self.ops.store_each)
        self.executor = ThreadPoolExecutor(config.max_concurrent_requests, thread_name_prefix="coap-op")
        self.busy = 0  # operations running on the executor
        self.acks: AckWatch | None = None  # set once the aiocoap context exists
        self.block1 = Block1Spool()
        self.block2 = Block2Cache()  # answers larger than a datagram, served block by block
        self.notification_blocks = NotificationBlocks()  # the same for notifications (blocks.py)
        # CON messages the gateway sends: separate responses (CON when the request was) and notifications
        self.responses = Transmission(config.ack_timeout_seconds, config.max_retransmit)
        self.notifications = Transmission(config.ack_timeout_seconds, config.max_retransmit, reliable=True)
        self.counters = {"coap_requests": 0, "coap_rate_limited": 0, "coap_busy": 0, "coap_unparsable": 0,
                         "coap_fast_posts": 0}
        self.fast = FastPosts(api, self.batcher, self.limiter, self.counters, config.max_payload_bytes, log)

    def install_fast_path(self, context: Any) -> bool:
        """Serve plain telemetry/attribute posts ahead of aiocoap on ``context``'s UDP endpoint (fastpath.py)."""
        return self.fast.install(context)

    # ------------------------------------------------------------- entry point (aiocoap)

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        self.counters["coap_requests"] += 1
        self.api.received_bytes(len(request.payload))
        if not self.limiter.allow(_address(request.remote)):
            self.counters["coap_rate_limited"] += 1
            response = Message(code=Code.TOO_MANY_REQUESTS)
            response.opt.max_age = self.limiter.retry_after()
            pipe.add_response(response, is_last=True)
            return
        try:
            response = await self._route(pipe, request)
        except RenderableError:
            raise  # aiocoap renders these itself (2.31 Continue, 4.08 incomplete)
        except Exception as exc:
            response = for_exception(exc)
            if response is None:
                self.log.exception("CoAP device API: unexpected error on %s", _feature_name(request))
                response = diagnostic(Code.INTERNAL_SERVER_ERROR, "internal error; see the gateway log")
        if response is not None:
            if request.opt.uri_path == _PROVISION:  # no valid token: answered with no more than received
                response = no_larger(response, request)
            response.transport_tuning = self.responses
            pipe.add_response(response, is_last=True)

    async def _route(self, pipe: Any, request: Message) -> Message | None:
        path = request.opt.uri_path
        if len(path) >= 3 and path[0] == "api" and path[1] == "v1":
            if path[2] == "provision" and len(path) == 3:
                return await self._provision(request)
            return await self._api(pipe, request, path[2], path[3:])
        if len(path) == 2 and path[0] in ("fw", "sw"):
            return await self._firmware(request, path[1])
        return empty(Code.NOT_FOUND)

    async def _api(self, pipe: Any, request: Message, token: str, rest: tuple[str, ...]) -> Message | None:
        device = self.ops.device(token)  # 4.01, empty: nothing larger than the request to a stranger
        refused = unsupported_options(request)
        if refused is not None:
            return refused
        if not rest or rest[0] not in _FEATURES or len(rest) > 2 or (len(rest) == 2 and rest[0] != "rpc"):
            return diagnostic(Code.BAD_REQUEST, "unknown resource: use telemetry, attributes, rpc, rpc/{id} or claim")
        feature, code = rest[0], request.code
        if code not in (Code.GET, Code.POST):
            return empty(Code.METHOD_NOT_ALLOWED)
        if code == Code.POST:
            body = self._body(request)
            if isinstance(body, Message):
                return body
            if feature == "telemetry":
                await self.batcher.store(self.ops.telemetry(device, body))
                return empty(Code.CREATED)
            if feature == "attributes":
                await self.batcher.store(self.ops.attributes(device, body))
                return empty(Code.CREATED)
            if feature == "claim":
                await self._run(self.ops.claim, device, body)
                return empty(Code.CREATED)
            if len(rest) == 2:
                await self._run(self.ops.rpc_reply, device, rest[1], body, True)
                return empty(Code.CREATED)
            rpc_request = self.ops.client_rpc_request(body)

            async def rpc_answer() -> Message:
                return json_message(Code.CONTENT, await self._run(self.ops.client_rpc, device, rpc_request))

            return await self.block2.extract_or_insert(request, rpc_answer)
        if feature == "attributes":
            return await self._get_attributes(pipe, request, device)
        if feature == "rpc" and len(rest) == 1:
            return await self._get_rpc(pipe, request, device)
        return diagnostic(Code.BAD_REQUEST, f"GET is not served on {feature}")

    def _body(self, request: Message) -> bytes | Message:
        """The request's payload (reassembled from Block1), or the error answering it."""
        if request.opt.content_format not in ACCEPTED_FORMATS:
            return diagnostic(Code.UNSUPPORTED_CONTENT_FORMAT, "send JSON: content format 50 (or 0, or none)")
        block1 = request.opt.block1
        if block1 is not None and block1.start + len(request.payload) > self.config.max_payload_bytes or \
                len(request.payload) > self.config.max_payload_bytes:
            response = diagnostic(Code.REQUEST_ENTITY_TOO_LARGE,
                                  f"payload over {self.config.max_payload_bytes} bytes (maxPayloadBytes)")
            response.opt.size1 = self.config.max_payload_bytes
            return response
        if block1 is not None:
            wrong = block1_misuse(request)
            if wrong is not None:
                return wrong
            try:
                request = self.block1.feed_and_take(request)  # raises 2.31 Continue until the last block
            except ValueError:  # aiocoap's spool: a gap or an overlap with the blocks received so far
                return diagnostic(Code.REQUEST_ENTITY_INCOMPLETE, f"Block1 block {block1.block_number} "
                                  "does not follow the blocks received; start again at block 0")
        return bytes(request.payload)

    # ------------------------------------------------------------- attributes and RPC

    async def _get_attributes(self, pipe: Any, request: Message, device: Device) -> Message | None:
        params = query(request)
        if request.opt.observe == 0:
            return await self._observe(pipe, request, device, "attributes", params)
        if request.opt.observe == 1:
            return self._deregister(request, device, "attributes")
        block = self.notification_blocks.serve(request)  # the rest of a block-wise notification
        if block is not None:
            return block

        async def answer() -> Message:
            values = await self._run(self.ops.request_attributes, device, params.get("clientKeys", []),
                                     params.get("sharedKeys", []))
            if not values:
                return diagnostic(Code.NOT_FOUND, "none of the attributes asked for exist")
            return json_message(Code.CONTENT, values)

        # Block2: block 0 asks ThingsBoard, the next blocks come from the answer kept for this request
        return await self.block2.extract_or_insert(request, answer)

    async def _get_rpc(self, pipe: Any, request: Message, device: Device) -> Message | None:
        if request.opt.observe == 0:
            return await self._observe(pipe, request, device, "rpc", {})
        if request.opt.observe == 1:
            return self._deregister(request, device, "rpc")
        return diagnostic(Code.BAD_REQUEST, "GET rpc needs Observe: 0 to subscribe (1 to cancel)")

    async def _observe(self, pipe: Any, request: Message, device: Device, kind: str,
                       params: dict[str, list[str]]) -> None:
        assert self.acks is not None
        observation = Observation(kind, device.name, request.remote, request.token)
        try:
            self.observations.add(observation)
        except TooManyObservations:
            pipe.add_response(diagnostic(Code.SERVICE_UNAVAILABLE, f"{self.config.max_observations} observations "
                                         f"are active (maxObservations)", max_age=30), is_last=True)
            return None
        notifier = Notifier(pipe, observation, self.acks, self.notifications, self.notification_blocks,
                            self.api.sent_bytes)
        mailboxes = self.api.mailboxes
        check = float(self.config.observe_check_seconds)
        if kind == "rpc":
            await observe(self.observations, notifier, mailboxes, asyncio.get_running_loop(),
                          lambda: serve_rpc(notifier, mailboxes, check))
            return None
        try:
            pending = mailboxes.take_attributes(device.name) or {}
            first_values: dict[str, Any] = {}
            shared = params.get("sharedKeys", [])
            if any(shared):
                first_values = await self._run(self.ops.request_attributes, device, [], shared)
                first_values = first_values.get("shared", {})
        except BaseException:
            self.observations.remove(observation)
            if pending:
                mailboxes.restore_attributes(device.name, pending)
            raise
        first_values.update(pending)  # what ThingsBoard pushed since is newer than what it answered
        await observe(self.observations, notifier, mailboxes, asyncio.get_running_loop(),
                      lambda: serve_attributes(notifier, mailboxes, first_values, check))
        return None

    def _deregister(self, request: Message, device: Device, kind: str) -> Message:
        """Observe: 1 ends the device's observation; the original exchange gets 2.02 (aiocoap has already
        ended it when the cancel reuses its token: then this answer is the final 2.02 on that token)."""
        observation = self.observations.find(kind, device.name)
        if observation is not None:
            observation.end("deregistered")
        return empty(Code.DELETED)

    # ------------------------------------------------------------- provisioning and firmware

    async def _provision(self, request: Message) -> Message:
        if request.code != Code.POST:
            return empty(Code.METHOD_NOT_ALLOWED)
        refused = unsupported_options(request)
        if refused is not None:
            return refused
        body = self._body(request)
        if isinstance(body, Message):
            return body
        answer = await self._run(self.ops.provision, body)
        # ThingsBoard's CoAP transport: 2.01 on SUCCESS, 4.00 with the same JSON otherwise
        return json_message(Code.CREATED if answer["status"] == "SUCCESS" else Code.BAD_REQUEST, answer)

    async def _firmware(self, request: Message, token: str) -> Message:
        self.ops.device(token)
        refused = unsupported_options(request)
        if refused is not None:
            return refused
        if request.code != Code.GET:
            return empty(Code.METHOD_NOT_ALLOWED)
        params = query(request)
        size_exp = block_size_exp(request)
        number = request.opt.block2.block_number if request.opt.block2 is not None else 0
        title, version = first(params, "title"), first(params, "version")
        size, chunk = first(params, "size"), first(params, "chunk")
        if size and size.strip() not in ("", "0"):
            # ThingsBoard's own chunking (size/chunk); Block2 then slices that chunk
            found = await self._run(self.ops.firmware, title, version, size, chunk)
            response = block_of(found.data, number, size_exp)
        else:
            block = 2 ** (size_exp + 4)
            found = await self._run(self.ops.firmware, title, version, str(block), str(number))
            response = block_of(found.data, number, size_exp, total=found.package.size, offset=number * block)
        response.opt.content_format = 42  # application/octet-stream
        return response

    # ------------------------------------------------------------- helpers

    async def _run(self, operation: Callable[..., T], *args: Any) -> T:
        """A blocking operation on the executor, bounded by ``maxConcurrentRequests``."""
        if self.busy >= self.config.max_concurrent_requests:
            self.counters["coap_busy"] += 1
            raise Unavailable(f"{self.config.max_concurrent_requests} requests are in progress "
                              f"(maxConcurrentRequests); retry later", 1)
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, operation, *args)
        finally:
            self.busy -= 1

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "coap_observations_attributes": self.observations.count("attributes"),
                "coap_observations_rpc": self.observations.count("rpc"),
                "coap_observations_refused": self.observations.refused,
                "coap_observations_replaced": self.observations.replaced,
                "coap_observations_dropped": self.observations.dropped,
                "coap_blockwise_notifications": self.notification_blocks.sent,
                "coap_store_batches": self.batcher.batches, "coap_rate_limited_addresses": len(self.limiter)}

    def close(self) -> None:
        self.fast.closed = True
        self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _address(remote: Any) -> str:
    sockaddr = getattr(remote, "sockaddr", None)
    return str(sockaddr[0]) if sockaddr else str(remote)


def _feature_name(request: Message) -> str:
    """The request's resource without the token, for logs."""
    path = request.opt.uri_path
    if len(path) >= 4 and path[:2] == ("api", "v1"):
        return "/".join(("api", "v1", "<token>", *path[3:]))
    return path[0] if path else "/"
