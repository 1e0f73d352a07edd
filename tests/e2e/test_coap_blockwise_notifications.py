"""Shared attributes too large for one datagram reach an observing device: the notification carries
block 0 with Block2, and the device fetches the rest (RFC 7959 §3.4). End to end on the daemon
process, ThingsBoard played by a real MQTT subscriber publishing on ``v1/gateway/attributes``."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess

from aiocoap import Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.e2e.test_coap_libcoap import Lines, wait_until
from tests.e2e.test_coap_observe import metric
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port, needs_coap_client

TOKEN, DEVICE = "BIG_TOKEN", "Big 1"
ATTRIBUTES = f"api/v1/{TOKEN}/attributes"
CERTIFICATE = "".join(f"{i:05d}-certificate-line;" for i in range(300))  # 6.9 KB, one value
CONFIG = {"rules": [{"id": i, "when": f"temperature > {i}", "then": "fan on"} for i in range(80)]}  # 3.5 KB


def start(make_daemon, **coap):
    port = free_udp_port()
    gw = make_daemon(coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}], **coap))
    gw.coap_port = port
    return gw


def push(subscriber, data: dict) -> None:
    subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": data})


def test_aiocoap_observer_gets_values_larger_than_a_datagram_whole_and_in_order(make_daemon, mqtt_subscriber) -> None:
    gateway = start(make_daemon)
    push(mqtt_subscriber, {"certificate": CERTIFICATE})  # kept while nobody observes
    assert wait_until(lambda: metric(gateway, "attribute_updates_kept_total") >= 1)

    async def observe() -> list[tuple[Code, dict]]:
        context = await Context.create_client_context()
        try:
            request = context.request(Message(code=Code.GET, observe=0,
                                              uri=f"coap://127.0.0.1:{gateway.coap_port}/{ATTRIBUTES}"))
            first = await request.response
            got = [(first.code, json.loads(first.payload))]
            for data in ({"config": CONFIG}, {"certificate": CERTIFICATE[::-1]}, {"mode": "eco"}):
                await asyncio.to_thread(push, mqtt_subscriber, data)  # back to back
            async for note in request.observation:
                got.append((note.code, json.loads(note.payload)))
                if len(got) == 4:
                    break
            request.observation.cancel()
            return got
        finally:
            await context.shutdown()

    got = asyncio.run(asyncio.wait_for(observe(), 60))
    assert got == [(Code.CONTENT, {"certificate": CERTIFICATE}), (Code.CONTENT, {"config": CONFIG}),
                   (Code.CONTENT, {"certificate": CERTIFICATE[::-1]}), (Code.CONTENT, {"mode": "eco"})]
    assert metric(gateway, "coap_blockwise_notifications_total") == 3


def test_blocks_on_the_wire_and_a_device_that_stops_fetching(make_daemon, mqtt_subscriber) -> None:
    gateway = start(make_daemon, ackTimeoutSeconds=1, maxRetransmit=1)
    device, other = RawClient(gateway.coap_port), RawClient(gateway.coap_port)
    try:
        request = device.build(Code.GET, ATTRIBUTES, observe=0, block2=(0, 4))  # asks for 256-byte blocks
        device.send(request)
        assert device.response(request.token).payload == b"{}"
        push(mqtt_subscriber, {"certificate": CERTIFICATE})
        note = device.response(request.token)
        whole = json.dumps({"certificate": CERTIFICATE}, separators=(",", ":")).encode()
        assert note.mtype == Type.CON and note.opt.observe == 1 and note.opt.content_format == 50
        assert (note.opt.block2.block_number, note.opt.block2.more, note.opt.block2.size_exponent) == (0, True, 4)
        assert note.opt.size2 == len(whole) and note.payload == whole[:256] and note.opt.etag
        payload = note.payload
        assert device.request(Code.GET, ATTRIBUTES, block2=(99, 4)).code == Code.BAD_OPTION  # past the end
        for number in range(1, 100):  # the rest: the observe request's resource, Block2 n, no Observe
            block = device.request(Code.GET, ATTRIBUTES, block2=(number, 4))
            assert block.code == Code.CONTENT and block.opt.observe is None and block.opt.etag == note.opt.etag
            payload += block.payload
            if not block.opt.block2.more:
                break
        assert payload == whole

        # the next one: block 0 is acknowledged, but the device never asks for the rest
        push(mqtt_subscriber, {"certificate": CERTIFICATE[::-1]})
        note = device.response(request.token)
        assert note.opt.block2.block_number == 0 and note.opt.block2.more
        ended = device.response(request.token, 30)  # the observation ends: a final 5.03 (NON), no Observe
        assert ended.code == Code.SERVICE_UNAVAILABLE and ended.mtype == Type.NON and ended.opt.observe is None
        assert metric(gateway, "coap_observations_dropped_total") == 1
        # the value was kept: the next observer (1024-byte blocks by default) gets it
        again = other.build(Code.GET, ATTRIBUTES, observe=0)
        other.send(again)
        first = other.response(again.token)
        assert first.opt.observe == 0 and first.opt.block2.block_number == 0 and len(first.payload) == 1024
        rest = [other.request(Code.GET, ATTRIBUTES, block2=(n, 6)) for n in range(1, 7)]
        assert not rest[-1].opt.block2.more
        assert json.loads(first.payload + b"".join(b.payload for b in rest)) == {"certificate": CERTIFICATE[::-1]}
    finally:
        device.close()
        other.close()



def test_an_observer_replaced_while_fetching_blocks_hands_the_value_to_the_new_one(make_daemon,
                                                                                  mqtt_subscriber) -> None:
    gateway = start(make_daemon)
    old, new = RawClient(gateway.coap_port), RawClient(gateway.coap_port)
    try:
        request = old.build(Code.GET, ATTRIBUTES, observe=0)
        old.send(request)
        assert old.response(request.token).payload == b"{}"
        push(mqtt_subscriber, {"certificate": CERTIFICATE})
        assert old.response(request.token).opt.block2.more  # acknowledged, but the rest is never fetched
        replacing = new.build(Code.GET, ATTRIBUTES, observe=0)
        new.send(replacing)
        assert new.response(replacing.token).payload == b"{}"  # the value is still out with the old observer
        ended = old.response(request.token)
        assert ended.code == Code.DELETED and ended.opt.observe is None
        # well before the old observer's 100 s of fetching time ran out, the new one gets the value
        note = new.response(replacing.token, 15)
        assert note is not None and note.opt.observe == 1 and note.opt.block2.more
        rest = [new.request(Code.GET, ATTRIBUTES, block2=(n, 6)) for n in range(1, 7)]
        assert json.loads(note.payload + b"".join(b.payload for b in rest)) == {"certificate": CERTIFICATE}
    finally:
        old.close()
        new.close()


def test_libcoap_observer_gets_a_value_larger_than_a_datagram(make_daemon, mqtt_subscriber, tmp_path) -> None:
    binary = needs_coap_client()
    gateway = start(make_daemon)
    observer = subprocess.Popen([binary, "-m", "get", "-w", "-s", "60",
                                 f"coap://127.0.0.1:{gateway.coap_port}/{ATTRIBUTES}"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        output = Lines(observer)
        assert json.loads(output.next()) == {}
        push(mqtt_subscriber, {"certificate": CERTIFICATE})
        assert json.loads(output.next()) == {"certificate": CERTIFICATE}
        push(mqtt_subscriber, {"mode": "eco"})
        assert json.loads(output.next()) == {"mode": "eco"}
        observer.send_signal(signal.SIGINT)
        assert observer.wait(30) == 0
    finally:
        observer.kill()
