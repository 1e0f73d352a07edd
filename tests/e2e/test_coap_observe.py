"""CoAP Observe end to end: shared-attribute and RPC notifications from a real broker playing
ThingsBoard to real CoAP clients, through the daemon process."""
from __future__ import annotations

import asyncio
import json
import time
import warnings

import pytest
import requests
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.fixtures.coap import (
    RawClient,
    coap_rest,
    free_udp_port,
    raw_clients,  # noqa: F401 (the clients fixture)
)

TOKEN, DEVICE = "OBS_TOKEN", "Observed 1"
DEVICES = [{"accessToken": TOKEN, "deviceName": DEVICE}]
ATTRIBUTES, RPC = f"api/v1/{TOKEN}/attributes", f"api/v1/{TOKEN}/rpc"


def start(make_daemon, **coap):
    port = free_udp_port()
    rest = coap_rest(port, DEVICES, **coap)
    rest["deviceApi"]["attributeRequestTimeout"] = 3000
    gw = make_daemon(rest)
    gw.coap_port = port
    return gw


@pytest.fixture
def gateway(make_daemon):
    return start(make_daemon)


def push_attributes(subscriber, data: dict) -> None:
    subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": data})


def push_rpc(subscriber, request_id: int, method: str, params: object = None) -> None:
    subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": request_id, "method": method,
                                                                     "params": params}})


def metric(gw, name: str) -> float:
    """A device API metric of the daemon, scraped from its admin listener as Prometheus would."""
    text = requests.get(gw.admin_url("/metrics"), timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"rest_gateway_device_api_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in /metrics")


def observe(client: RawClient, path: str, **kwargs) -> tuple[Message, Message]:
    request = client.build(Code.GET, path, observe=0, **kwargs)
    client.send(request)
    first = client.response(request.token, 10)
    assert first is not None
    return request, first


def test_attribute_notifications_cancel_and_what_arrives_meanwhile(gateway, clients, mqtt_subscriber) -> None:
    client = clients()
    request, first = observe(client, ATTRIBUTES)
    assert first.code == Code.CONTENT and first.opt.observe == 0 and json.loads(first.payload) == {}
    push_attributes(mqtt_subscriber, {"targetTemperature": 22, "mode": "eco"})
    note = client.response(request.token)
    assert note.code == Code.CONTENT and note.mtype == Type.CON and note.opt.observe == 1
    assert json.loads(note.payload) == {"targetTemperature": 22, "mode": "eco"}
    push_attributes(mqtt_subscriber, {"deleted": ["mode"]})
    note = client.response(request.token)
    assert note.opt.observe == 2 and json.loads(note.payload) == {"deleted": ["mode"]}

    # cancel with Observe: 1 on the same token: the final answer on that token is 2.02, no Observe option
    cancel = client.build(Code.GET, ATTRIBUTES, observe=1, token=request.token)
    client.send(cancel)
    final = client.response(request.token)
    assert final.code == Code.DELETED and final.opt.observe is None

    # updates while nobody observes are kept, merged per key, and come with the next observation
    push_attributes(mqtt_subscriber, {"a": 1, "b": 1})
    push_attributes(mqtt_subscriber, {"a": 2})
    deadline = time.monotonic() + 10  # until the gateway has both (the broker forwards them asynchronously)
    while metric(gateway, "attribute_updates_kept_total") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.response(request.token, 1) is None  # nothing more on the cancelled observation
    _, first = observe(client, ATTRIBUTES)
    assert json.loads(first.payload) == {"b": 1, "a": 2}


def test_a_new_observer_replaces_the_old_one(gateway, clients, mqtt_subscriber) -> None:
    old, new = clients(), clients()
    old_request, _ = observe(old, ATTRIBUTES)
    new_request, first = observe(new, ATTRIBUTES)
    assert first.code == Code.CONTENT
    ended = old.response(old_request.token)
    assert ended.code == Code.DELETED and ended.opt.observe is None
    push_attributes(mqtt_subscriber, {"x": 1})
    assert json.loads(new.response(new_request.token).payload) == {"x": 1}
    assert old.response(old_request.token, 1) is None
    # a cancel from another client (another token) ends the observation: its exchange gets 2.02
    other = clients()
    cancel = other.request(Code.GET, ATTRIBUTES, observe=1)
    assert cancel.code == Code.DELETED
    assert new.response(new_request.token).code == Code.DELETED


def test_first_notification_with_shared_keys_and_many_attributes_fit_datagrams(gateway, clients,
                                                                              mqtt_subscriber) -> None:
    client = clients()
    request = client.build(Code.GET, ATTRIBUTES, observe=0, query=("sharedKeys=fw_title,fw_version",))
    client.send(request)
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.on("v1/gateway/attributes/request"), 10)
    asked = mqtt_subscriber.on("v1/gateway/attributes/request")[0]
    assert asked["client"] is False and asked["keys"] == ["fw_title", "fw_version"]
    mqtt_subscriber.publish("v1/gateway/attributes/response", {"id": asked["id"], "device": DEVICE,
                                                               "values": {"fw_title": "T", "fw_version": "1"}})
    first = client.response(request.token)
    assert first.opt.observe == 0 and json.loads(first.payload) == {"fw_title": "T", "fw_version": "1"}

    many = {f"setting_{i:03d}": "v" * 40 for i in range(120)}  # ~7 KB: several datagrams' worth
    push_attributes(mqtt_subscriber, many)
    got: dict = {}
    numbers = []
    while len(got) < len(many):
        note = client.response(request.token)
        assert note is not None, f"only {len(got)} of {len(many)} keys arrived"
        assert len(note.payload) <= 1024
        numbers.append(note.opt.observe)
        got.update(json.loads(note.payload))
    assert got == many and len(numbers) > 1 and numbers == sorted(numbers)


def test_rpc_observe_delivers_back_to_back_rpcs_in_order_and_replies(gateway, clients, mqtt_subscriber) -> None:
    client = clients()
    request, first = observe(client, RPC)
    assert first.code == Code.VALID and first.opt.observe == 0 and first.payload == b""
    push_rpc(mqtt_subscriber, 1, "setGpio", {"pin": 23, "value": 1})
    push_rpc(mqtt_subscriber, 2, "setGpio", {"pin": 24, "value": 0})  # back to back: aiocoap's trigger() lost one
    notes = [client.response(request.token), client.response(request.token)]
    assert [json.loads(n.payload) for n in notes] == [
        {"id": 1, "method": "setGpio", "params": {"pin": 23, "value": 1}},
        {"id": 2, "method": "setGpio", "params": {"pin": 24, "value": 0}}]
    assert all(n.code == Code.CONTENT and n.mtype == Type.CON for n in notes)
    assert client.request(Code.POST, f"{RPC}/1", b'{"result": "ok"}').code == Code.CREATED
    assert client.request(Code.POST, f"{RPC}/2", b'"not an object"').code == Code.BAD_REQUEST
    assert client.request(Code.POST, f"{RPC}/2", b'{"result": 2}').code == Code.CREATED
    assert client.request(Code.POST, f"{RPC}/2", b'{"result": 2}').code == Code.NOT_FOUND  # answered once
    assert client.request(Code.POST, f"{RPC}/x", b'{}').code == Code.BAD_REQUEST
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.on("v1/gateway/rpc")) >= 4, 10)
    replies = [m for m in mqtt_subscriber.on("v1/gateway/rpc") if "data" in m and "id" in m]
    assert replies == [{"device": DEVICE, "id": 1, "data": {"result": "ok"}},
                       {"device": DEVICE, "id": 2, "data": {"result": 2}}]


def test_an_rpc_the_device_resets_is_kept_for_the_next_taker(gateway, clients, mqtt_subscriber) -> None:
    client = clients()
    request, _ = observe(client, RPC)
    client.on_confirmable = "rst"  # the device rebooted: it knows nothing of this observation
    push_rpc(mqtt_subscriber, 7, "reboot")
    note = client.response(request.token)
    assert json.loads(note.payload)["id"] == 7
    time.sleep(0.3)
    # the next taker gets it: here ThingsBoard's HTTP long poll of the same device API
    answer = requests.get(gateway.url(f"/api/v1/{TOKEN}/rpc?timeout=3000"), timeout=10)
    assert answer.status_code == 200 and answer.json() == {"id": 7, "method": "reboot", "params": None}
    assert metric(gateway, "coap_observations_dropped_total") == 1
    assert metric(gateway, "coap_observations_rpc") == 0


def test_idle_observations_are_checked_and_dead_ones_dropped(make_daemon, mqtt_subscriber) -> None:
    gw = start(make_daemon, observeCheckSeconds=1)
    alive, dead = RawClient(gw.coap_port), RawClient(gw.coap_port)
    try:
        alive_request, _ = observe(alive, ATTRIBUTES)
        rpc_request, _ = observe(dead, RPC)
        dead.on_confirmable = "rst"
        check = alive.response(alive_request.token, 5)
        assert check.code == Code.CONTENT and check.mtype == Type.CON and json.loads(check.payload) == {}
        rpc_check = dead.response(rpc_request.token, 5)
        assert rpc_check.code == Code.VALID and rpc_check.mtype == Type.CON
        time.sleep(0.3)
        assert metric(gw, "coap_observations_rpc") == 0 and metric(gw, "coap_observations_attributes") == 1
    finally:
        alive.close()
        dead.close()


def test_observation_cap(make_daemon) -> None:
    gw = start(make_daemon, maxObservations=1)
    client = RawClient(gw.coap_port)
    try:
        _, first = observe(client, ATTRIBUTES)
        assert first.code == Code.CONTENT
        _, refused = observe(client, RPC)
        assert refused.code == Code.SERVICE_UNAVAILABLE and refused.opt.max_age == 30
    finally:
        client.close()


def test_aiocoap_client_observes_attributes_and_rpc(gateway, mqtt_subscriber) -> None:
    async def run() -> tuple[list, list]:
        context = await Context.create_client_context()
        base = f"coap://127.0.0.1:{gateway.coap_port}/{ATTRIBUTES}"
        try:
            attributes = context.request(Message(code=Code.GET, uri=base, observe=0))
            rpc = context.request(Message(code=Code.GET, uri=base.replace("attributes", "rpc"), observe=0))
            got_attributes = [json.loads((await attributes.response).payload)]
            got_rpc = [(await rpc.response).code]
            # every notification, queued as it arrives: aiocoap's `async for` keeps only the latest one,
            # and RPC 4 may follow RPC 3 before the test gets to read it
            attribute_notes: asyncio.Queue[Message] = asyncio.Queue()
            rpc_notes: asyncio.Queue[Message] = asyncio.Queue()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                attributes.observation.register_callback(attribute_notes.put_nowait)
                rpc.observation.register_callback(rpc_notes.put_nowait)
            await asyncio.to_thread(push_attributes, mqtt_subscriber, {"k": "v"})
            await asyncio.to_thread(push_rpc, mqtt_subscriber, 3, "m", {"p": 1})
            await asyncio.to_thread(push_rpc, mqtt_subscriber, 4, "m", {"p": 2})
            got_attributes.append(json.loads((await attribute_notes.get()).payload))
            while len(got_rpc) < 3:
                got_rpc.append(json.loads((await rpc_notes.get()).payload)["id"])
            attributes.observation.cancel()
            rpc.observation.cancel()
            return got_attributes, got_rpc
        finally:
            await context.shutdown()

    got_attributes, got_rpc = asyncio.run(asyncio.wait_for(run(), 30))
    assert got_attributes == [{}, {"k": "v"}]
    assert got_rpc == [Code.VALID, 3, 4]
