"""Every example of the CoAP spec (coap-device-api.md) sent by aiocoap's own client
(``Context.create_client_context``) to the daemon process; a real MQTT subscriber plays ThingsBoard
where an answer is needed, and the test asserts the CoAP codes and what ThingsBoard sees."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code

from tests.e2e.test_coap_libcoap import answer_attribute_requests
from tests.e2e.test_device_api import FILES, NESTED
from tests.fixtures.coap import coap_rest, free_udp_port

TOKEN, DEVICE = "AIOCOAP_TOKEN", "Aiocoap Sensor"
KEY, SECRET = "u7piawkboq8v32dmcmpp", "jpmwdn8ptlswmf4m29bw"  # the spec's provisioning example
RPC_REQUEST = "v1/devices/me/rpc/request/"


@pytest.fixture
def gateway(make_daemon):
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}])
    rest["deviceApi"].update({"provisioning": {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET},
                              "attributeRequestTimeout": 10000, "clientRpcTimeout": 10000})
    gw = make_daemon(rest)
    gw.coap_port = port
    return gw


def run_client(scenario: Callable[[Context], Awaitable[Any]]) -> Any:
    """Run ``scenario`` with a fresh aiocoap client context, always shut down afterwards."""

    async def run() -> Any:
        context = await Context.create_client_context()
        try:
            return await asyncio.wait_for(scenario(context), 60)
        finally:
            await context.shutdown()

    return asyncio.run(run())


def uri(gateway, path: str) -> str:
    return f"coap://127.0.0.1:{gateway.coap_port}/{path}"


def post(gateway, path: str, body: bytes | str) -> Message:
    """One POST of ``body`` by aiocoap's client; its response."""
    payload = body.encode() if isinstance(body, str) else body

    async def scenario(context: Context) -> Message:
        return await context.request(Message(code=Code.POST, uri=uri(gateway, path), payload=payload)).response

    return run_client(scenario)


def test_telemetry_and_attribute_uploads(gateway, mqtt_subscriber) -> None:
    """The spec's three telemetry formats (object, array, ``{ts, values}``) and its attributes post."""
    for name in ("telemetry-data-as-object.json", "telemetry-data-as-array.json", "telemetry-data-with-ts.json"):
        answer = post(gateway, f"api/v1/{TOKEN}/telemetry", FILES[name])
        assert answer.code == Code.CREATED and answer.payload == b"", name
    answer = post(gateway, f"api/v1/{TOKEN}/attributes", FILES["new-attributes-values.json"])
    assert answer.code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for(DEVICE)) >= 3, 15)
    entries = mqtt_subscriber.telemetry_for(DEVICE)
    scalars = {"stringKey": "value1", "booleanKey": True, "doubleKey": 42.0, "longKey": 73, "jsonKey": NESTED}
    # the array's objects share the server's timestamp: one entry, as over HTTP
    assert [e["values"] for e in entries] == [scalars, {"key1": "value1", "key2": True}, scalars]
    assert entries[2]["ts"] == 1451649600512
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.attributes_for(DEVICE), 10)
    assert mqtt_subscriber.attributes_for(DEVICE) == {"attribute1": "value1", "attribute2": True,
                                                      "attribute3": 42.0, "attribute4": 73, "attribute5": NESTED}


def test_attribute_request(gateway, mqtt_subscriber) -> None:
    """``GET .../attributes?clientKeys=attribute1,attribute2&sharedKeys=shared1,shared2``."""
    async def scenario(context: Context) -> Message:
        request = context.request(Message(code=Code.GET, uri=uri(
            gateway, f"api/v1/{TOKEN}/attributes?clientKeys=attribute1,attribute2&sharedKeys=shared1,shared2")))
        asked = asyncio.to_thread(answer_attribute_requests, mqtt_subscriber,
                                  {True: {"attribute1": "value1", "attribute2": True}, False: {"shared1": "value1"}}, 2)
        answer, _ = await asyncio.gather(request.response, asked)
        return answer

    answer = run_client(scenario)
    requests = mqtt_subscriber.on("v1/gateway/attributes/request")
    assert [(r["device"], r["client"], r["keys"]) for r in requests] == [
        (DEVICE, True, ["attribute1", "attribute2"]), (DEVICE, False, ["shared1", "shared2"])]
    assert answer.code == Code.CONTENT
    assert json.loads(answer.payload) == {"client": {"attribute1": "value1", "attribute2": True},
                                          "shared": {"shared1": "value1"}}


def test_attribute_subscription_and_server_side_rpc_with_reply(gateway, mqtt_subscriber) -> None:
    """Observe ``/attributes`` and ``/rpc``; ThingsBoard's ``setGpio`` example; the reply to RPC 1."""
    rpc = {"id": 1, "method": "setGpio", "params": {"pin": "23", "value": 1}}

    async def scenario(context: Context) -> tuple[list[Any], list[Any], Message]:
        attributes = context.request(Message(code=Code.GET, uri=uri(gateway, f"api/v1/{TOKEN}/attributes"), observe=0))
        rpcs = context.request(Message(code=Code.GET, uri=uri(gateway, f"api/v1/{TOKEN}/rpc"), observe=0))
        first_attributes, first_rpc = await attributes.response, await rpcs.response
        got_attributes = [(first_attributes.code, json.loads(first_attributes.payload))]
        got_rpc: list[Any] = [(first_rpc.code, first_rpc.payload)]
        await asyncio.to_thread(mqtt_subscriber.publish, "v1/gateway/attributes",
                                {"device": DEVICE, "data": {"shared1": "value1"}})
        await asyncio.to_thread(mqtt_subscriber.publish, "v1/gateway/rpc", {"device": DEVICE, "data": rpc})
        async for note in attributes.observation:
            got_attributes.append((note.code, json.loads(note.payload)))
            break
        async for note in rpcs.observation:
            got_rpc.append((note.code, json.loads(note.payload)))
            break
        reply = await context.request(Message(code=Code.POST, uri=uri(gateway, f"api/v1/{TOKEN}/rpc/1"),
                                              payload=FILES["rpc-response.json"].encode())).response
        attributes.observation.cancel()
        rpcs.observation.cancel()
        return got_attributes, got_rpc, reply

    got_attributes, got_rpc, reply = run_client(scenario)
    assert got_attributes == [(Code.CONTENT, {}), (Code.CONTENT, {"shared1": "value1"})]
    assert got_rpc == [(Code.VALID, b""), (Code.CONTENT, rpc)]
    assert reply.code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: [m for m in mqtt_subscriber.on("v1/gateway/rpc") if "id" in m], 10)
    assert [m for m in mqtt_subscriber.on("v1/gateway/rpc") if "id" in m] == [
        {"device": DEVICE, "id": 1, "data": {"result": "ok"}}]


def play_client_rpc_server(subscriber: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """Play ThingsBoard's rule chain: answer the first client-side RPC request; return that request."""
    assert subscriber.wait_for(lambda m: any(t.startswith(RPC_REQUEST) for t, _, _ in m), 15)
    topic, request, _ = next(m for m in subscriber.messages if m[0].startswith(RPC_REQUEST))
    subscriber.publish(topic.replace("request", "response"), answer)
    return request


def test_client_side_rpc(gateway, mqtt_subscriber) -> None:
    """POST ``.../rpc`` with rpc-client-request.json; ThingsBoard answers rpc-server-response.json."""
    async def scenario(context: Context) -> tuple[Message, dict[str, Any]]:
        request = context.request(Message(code=Code.POST, uri=uri(gateway, f"api/v1/{TOKEN}/rpc"),
                                          payload=FILES["rpc-client-request.json"].encode()))
        served = asyncio.to_thread(play_client_rpc_server, mqtt_subscriber, {"time": "2016 11 21 12:54:44.287"})
        answer, seen = await asyncio.gather(request.response, served)
        return answer, seen

    answer, seen = run_client(scenario)
    assert seen == {"method": "getCurrentTime", "params": {"device": DEVICE, "params": {}}}
    assert answer.code == Code.CONTENT and json.loads(answer.payload) == {"time": "2016 11 21 12:54:44.287"}


def test_claim_and_provision(gateway, mqtt_subscriber) -> None:
    """The spec's claim body, and its provisioning body (then the new token posts telemetry)."""
    claim = post(gateway, f"api/v1/{TOKEN}/claim", '{"secretKey":"value", "durationMs":60000}')
    assert claim.code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.on("v1/gateway/claim"), 10)
    assert mqtt_subscriber.on("v1/gateway/claim") == [{DEVICE: {"secretKey": "value", "durationMs": 60000}}]

    body = json.dumps({"deviceName": "DEVICE_NAME", "provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET})
    provisioned = post(gateway, "api/v1/provision", body)
    assert provisioned.code == Code.CREATED
    answer = json.loads(provisioned.payload)
    assert answer["status"] == "SUCCESS" and answer["credentialsType"] == "ACCESS_TOKEN"
    again = post(gateway, "api/v1/provision", body)  # the name is taken now: ThingsBoard's FAILURE, as 4.00
    assert again.code == Code.BAD_REQUEST and json.loads(again.payload)["status"] == "FAILURE"
    assert post(gateway, f"api/v1/{answer['credentialsValue']}/telemetry", '{"key1":"value1"}').code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("DEVICE_NAME"), 15)
    assert mqtt_subscriber.telemetry_for("DEVICE_NAME")[0]["values"] == {"key1": "value1"}
