"""The CoAP fast path for plain posts: what it serves itself, what it hands to aiocoap unchanged, and its
deduplication (stored once, the same answer again, bounded memory)."""
from __future__ import annotations

import asyncio
import logging
import socket
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import BlockOption

from connectors.rest.device_api.coap.batcher import StoreBatcher
from connectors.rest.device_api.coap.fastpath import FastPosts
from connectors.rest.device_api.coap.ratelimit import AddressLimiter
from connectors.rest.device_api.model import CoapRateLimit
from connectors.rest.device_api.operations import Unavailable
from connectors.rest.device_api.registry import Device
from converters.model import ConvertedData

TOKEN = "FAST_TOKEN"
DEVICE = Device("Fast device", "sensor")
ADDRESS = ("::ffff:127.0.0.1", 40000, 0, 0)
OPEN: list[Setup] = []  # closed after each test (their storage threads)


class Endpoint:
    """Stands in for aiocoap's UDP endpoint: records what is passed on to aiocoap and what is sent."""

    def __init__(self) -> None:
        self.passed: list[bytes] = []
        self.sent: list[tuple[bytes, Any, Any]] = []
        self.transport = SimpleNamespace(sendmsg=lambda data, anc, flags, addr: self.sent.append((data, anc, addr)))

    def datagram_msg_received(self, data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        self.passed.append(data)


class Setup:
    def __init__(self, limit: CoapRateLimit | None = None, fail: BaseException | None = None,
                 sources: int = 1000, per_source: int = 4) -> None:
        self.stored: list[ConvertedData] = []
        self.fail = fail
        self.tokens: int | None = None  # the gateway-wide rate limit's tokens left (None: no limit)
        self.counts: dict[str, int] = {}
        self.received: list[int] = []  # body sizes counted for the statistics (receivedBytesFromDevices)
        registry = SimpleNamespace(lookup=lambda token: DEVICE if token == TOKEN else None)
        api = SimpleNamespace(registry=registry, count=self.count, received_bytes=self.received.append)
        self.batcher = StoreBatcher(self.store)
        OPEN.append(self)
        self.counters = {"coap_requests": 0}
        self.clock = [0.0]
        self.fast = FastPosts(api, self.batcher, AddressLimiter(limit or CoapRateLimit()), self.counters, 1000,  # type: ignore[arg-type]
                              logging.getLogger("test"), sources, per_source, now=lambda: self.clock[0])
        self.endpoint = Endpoint()
        context = SimpleNamespace(request_interfaces=[SimpleNamespace(
            token_interface=SimpleNamespace(message_interface=self.endpoint))])
        assert self.fast.install(context)

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def store(self, data: Sequence[ConvertedData]) -> list[BaseException | None]:
        """As DeviceOperations.store_each: one outcome per post; past ``tokens`` posts are refused alone."""
        if self.fail is not None:
            raise self.fail
        outcomes: list[BaseException | None] = []
        for item in data:
            if self.tokens is not None and self.tokens <= 0:
                outcomes.append(Unavailable("data not accepted: storage.rateLimit is reached", 9))
                continue
            if self.tokens is not None:
                self.tokens -= 1
            self.stored.append(item)
            outcomes.append(None)
        return outcomes

    def feed(self, datagram: bytes, ancdata: Any = (), address: Any = ADDRESS) -> None:
        self.endpoint.datagram_msg_received(datagram, list(ancdata), 0, address)

    def answers(self) -> list[Message]:
        return [Message.decode(data) for data, _, _ in self.endpoint.sent]


def post(path: str = f"api/v1/{TOKEN}/telemetry", payload: bytes = b'{"t": 1}', mid: int = 7,
         token: bytes = b"\x01\x02\x03\x04", mtype: Type = Type.CON, code: Code = Code.POST, **options: Any) -> bytes:
    with warnings.catch_warnings():  # aiocoap deprecates setting these by hand; a test must
        warnings.simplefilter("ignore", DeprecationWarning)
        message = Message(mtype=mtype, code=code, mid=mid, token=token, payload=payload)
    message.opt.uri_path = tuple(path.split("/"))
    for name, value in options.items():
        setattr(message.opt, name, value)
    return bytes(message.encode())


async def settle(setup: Setup, sent: int) -> None:
    """Wait (on the loop, generously) until ``sent`` datagrams were sent by the fast path."""
    for _ in range(500):
        if len(setup.endpoint.sent) >= sent:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(setup.endpoint.sent)} answers were sent, {sent} expected")


def run(test: Any) -> None:
    async def main() -> None:
        await test()

    try:
        asyncio.run(main())
    finally:
        while OPEN:
            OPEN.pop().batcher.close()


def test_a_plain_post_is_stored_and_answered_2_01_piggybacked() -> None:
    async def body() -> None:
        setup = Setup()
        setup.feed(post(content_format=50))
        setup.feed(post(f"api/v1/{TOKEN}/attributes", b'{"fw": "1.0"}', mid=8, token=b"\x09"))
        await settle(setup, 2)
        first, second = setup.answers()
        assert (first.mtype, first.code, first.mid, first.token, first.payload) == \
            (Type.ACK, Code.CREATED, 7, b"\x01\x02\x03\x04", b"")
        assert (second.code, second.mid, second.token) == (Code.CREATED, 8, b"\x09")
        assert setup.endpoint.passed == []
        stored = [d.telemetry[0].values if d.telemetry else d.attributes for d in setup.stored]
        assert stored == [{"t": 1}, {"fw": "1.0"}]
        assert setup.stored[0].device_name == DEVICE.name
        assert setup.counts == {"telemetry_posts": 1, "attribute_posts": 1}
        assert setup.counters["coap_fast_posts"] == 2 and setup.counters["coap_requests"] == 2
        assert setup.received == [len(b'{"t": 1}'), len(b'{"fw": "1.0"}')]
    run(body)


def test_a_duplicate_is_ignored_while_stored_then_answered_again_and_never_stored_twice() -> None:
    async def body() -> None:
        setup = Setup()
        datagram = post()
        setup.feed(datagram)
        setup.feed(datagram)  # while the first is being stored: no answer, no second store
        await settle(setup, 1)
        setup.feed(datagram)  # the answer was lost: the same answer again
        await settle(setup, 2)
        assert [a.code for a in setup.answers()] == [Code.CREATED, Code.CREATED]
        assert len({a.mid for a in setup.answers()}) == 1
        setup.feed(post(mid=8))  # another message id from the same device is a new request
        await settle(setup, 3)
        assert len(setup.stored) == 2
        other = ("::ffff:127.0.0.2", 40000, 0, 0)
        setup.feed(datagram, address=other)  # the same message id from another endpoint is new too
        await settle(setup, 4)
        assert len(setup.stored) == 3
    run(body)


BLOCK1 = BlockOption.BlockwiseTuple(0, True, 6)


@pytest.mark.parametrize("datagram", [
    post(code=Code.GET, payload=b""),
    post(code=Code.PUT),
    post(mtype=Type.NON),
    post(payload=b""),  # no payload: the site's 4.00
    post(payload=b'{"t": '),  # bad JSON: the site's 4.00 with the reason
    post(payload=b"x" * 1001),  # over maxPayloadBytes: the site's 4.13
    post("api/v1/WRONG/telemetry"),  # unknown token: the site's 4.01
    post(f"api/v1/{TOKEN}/claim"),
    post(f"api/v1/{TOKEN}/rpc"),
    post(f"api/v1/{TOKEN}/telemetry/x"),
    post(f"api/v2/{TOKEN}/telemetry"),
    post(content_format=60),  # CBOR: the site's 4.15
    post(block1=BLOCK1),
    post(observe=0),
    post(uri_query=("a=b",)),
    post(uri_host="example"),
    b"\x40\x02\x00",  # truncated
    bytes((0x49, 0x02, 0, 1)) + b"\x00" * 9 + b"\xff{}",  # token length 9: malformed
    b"\x44\x02\x00\x01abcd\xbf",  # option delta 11, length 15: malformed
    b"\x44\x02\x00\x01abcd\xb5api",  # Uri-Path runs past the end
    b"\x80\x02\x00\x01\xff{}",  # CoAP version 2
])
def test_anything_else_is_handed_to_aiocoap_unchanged(datagram: bytes) -> None:
    async def body() -> None:
        setup = Setup()
        setup.feed(datagram)
        setup.feed(datagram)  # and so are its copies: aiocoap deduplicates those itself
        assert setup.endpoint.passed == [datagram, datagram]
        await asyncio.sleep(0.05)
        assert setup.endpoint.sent == [] and setup.stored == []
        assert setup.counts == {} and setup.counters["coap_fast_posts"] == 0
    run(body)


def test_a_long_token_is_still_served() -> None:
    async def body() -> None:
        setup = Setup()
        long_token = "T" * 200  # a Uri-Path option with a one-byte extended length
        setup.fast.api.registry.lookup = lambda token: DEVICE if token == long_token else None
        setup.feed(post(f"api/v1/{long_token}/telemetry"))
        await settle(setup, 1)
        assert setup.answers()[0].code == Code.CREATED and len(setup.stored) == 1
    run(body)


def test_a_rate_limited_address_and_a_multicast_destination_go_to_aiocoap() -> None:
    async def body() -> None:
        setup = Setup(CoapRateLimit(requests=1, per_seconds=3600, burst=1))
        setup.feed(post(mid=1))
        setup.feed(post(mid=2))  # over the limit: the site answers 4.29 with Max-Age
        await settle(setup, 1)
        assert len(setup.endpoint.passed) == 1 and len(setup.stored) == 1
        multicast = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, b"\xff\x02" + b"\0" * 13 + b"\xfd" + b"\0" * 4)
        setup.feed(post(mid=3), ancdata=[multicast])
        assert len(setup.endpoint.passed) == 2
    run(body)


def test_a_refusing_storage_is_answered_5_03_with_max_age() -> None:
    async def body() -> None:
        setup = Setup(fail=Unavailable("storage is full", 7))
        setup.feed(post())
        await settle(setup, 1)
        answer = setup.answers()[0]
        assert (answer.mtype, answer.code, answer.mid, answer.opt.max_age) == (Type.ACK, Code.SERVICE_UNAVAILABLE, 7, 7)
        assert b"storage is full" in answer.payload
        setup.feed(post())  # its copy gets the same answer, and nothing is stored
        await settle(setup, 2)
        assert setup.endpoint.sent[1][0] == setup.endpoint.sent[0][0] and setup.stored == []
    run(body)


def test_posts_past_the_global_rate_limit_in_one_batch_are_refused_alone_with_5_03() -> None:
    async def body() -> None:
        setup = Setup()
        setup.tokens = 3
        for mid in range(6):  # all queued before the loop runs: one batch of 6 after the first
            setup.feed(post(payload=b'{"seq": %d}' % mid, mid=mid))
        await settle(setup, 6)
        answers = {answer.mid: answer for answer in setup.answers()}
        assert [answers[mid].code for mid in range(6)] == [Code.CREATED] * 3 + [Code.SERVICE_UNAVAILABLE] * 3
        assert all(answers[mid].opt.max_age == 9 for mid in range(3, 6))
        assert [d.telemetry[0].values["seq"] for d in setup.stored] == [0, 1, 2]
        setup.feed(post(payload=b'{"seq": 5}', mid=5))  # a refused post's copy: the same 5.03, not stored
        await settle(setup, 7)
        assert setup.endpoint.sent[-1][0] == [sent for sent in setup.endpoint.sent if sent[0][3] == 5][0][0]
        assert len(setup.stored) == 3 and setup.batcher.batches == 2
    run(body)


def test_the_exchanges_remembered_are_bounded_in_number_and_time() -> None:
    async def body() -> None:
        setup = Setup(sources=10, per_source=3)
        for number in range(25):
            for mid in range(5):
                setup.feed(post(mid=mid), address=(f"::ffff:10.0.0.{number}", 40000, 0, 0))
        await settle(setup, 125)
        assert len(setup.fast.recent) == 10 and len(setup.fast) == 30
        setup.clock[0] = 300.0  # past EXCHANGE_LIFETIME: the next source pushes all the old ones out
        setup.feed(post(mid=99))
        await settle(setup, 126)
        assert len(setup.fast) == 1
    run(body)


def test_a_retransmission_after_many_other_clients_exchanges_is_answered_again_not_stored_twice() -> None:
    """More exchanges from other clients in between than the old global cache held (1000 here): the
    device's own last exchange is still remembered, because other clients only fill their own slots."""
    async def body() -> None:
        setup = Setup(sources=1000, per_source=4)
        datagram = post(payload=b'{"seq": 1}')
        setup.feed(datagram)
        await settle(setup, 1)
        for number in range(5000):  # 500 other clients, 10 posts each, the same message ids as the device's
            setup.clock[0] = number / 1000
            client = number % 500
            address = (f"::ffff:10.0.1.{client % 250}", 41000 + client // 250, 0, 0)
            setup.feed(post(mid=7 + number // 500), address=address)
        await settle(setup, 5001)
        setup.clock[0] = 40.0  # within RFC 7252's MAX_TRANSMIT_SPAN (45 s): the device retransmits
        setup.feed(datagram)
        await settle(setup, 5002)
        assert setup.endpoint.sent[-1][0] == setup.endpoint.sent[0][0]  # the same 2.01, same mid and token
        assert len(setup.stored) == 5001 and setup.stored[0].telemetry[0].values == {"seq": 1}
        assert setup.endpoint.passed == []
    run(body)


def test_a_post_with_an_unknown_token_is_not_remembered() -> None:
    """aiocoap answers its copies from its own cache; remembering it would let datagrams without a
    valid token (any source address can be spoofed) push real devices' exchanges out."""
    async def body() -> None:
        setup = Setup(sources=2)
        setup.feed(post())
        await settle(setup, 1)
        for number in range(10):
            setup.feed(post("api/v1/WRONG/telemetry"), address=(f"::ffff:10.0.2.{number}", 5683, 0, 0))
        assert len(setup.endpoint.passed) == 10 and len(setup.fast.recent) == 1
        setup.feed(post())
        await settle(setup, 2)
        assert len(setup.stored) == 1 and setup.endpoint.sent[1][0] == setup.endpoint.sent[0][0]
    run(body)


def test_a_message_id_used_again_after_the_exchange_lifetime_is_a_new_request() -> None:
    async def body() -> None:
        setup = Setup()
        setup.feed(post())
        await settle(setup, 1)
        setup.clock[0] = 250.0  # past EXCHANGE_LIFETIME (247 s): the device may reuse the message id
        setup.feed(post(payload=b'{"t": 2}'))
        await settle(setup, 2)
        assert [d.telemetry[0].values for d in setup.stored] == [{"t": 1}, {"t": 2}]
    run(body)
