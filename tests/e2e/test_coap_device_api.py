"""The CoAP device API end to end: the daemon process, a real broker playing ThingsBoard, and real
CoAP clients (a raw UDP client that controls every field, and aiocoap's own client)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiocoap import Context, Message
from aiocoap.numbers.codes import Code

from tests.fixtures.coap import RawClient, coap_rest, free_udp_port

TOKEN = "COAP_TEST_TOKEN"
DEVICE = "Coap Sensor 1"
OTHER_TOKEN, OTHER = "COAP_OTHER_TOKEN", "Coap Sensor 2"
KEY, SECRET = "u7piawkboq8v32dmcmpp", "jpmwdn8ptlswmf4m29bw"
DEVICES = [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "thermometer"},
           {"accessToken": OTHER_TOKEN, "deviceName": OTHER}]


@pytest.fixture
def gateway(make_daemon, tmp_path: Path):
    firmware = tmp_path / "firmware" / "COAP_FW" / "2.0"
    firmware.mkdir(parents=True)
    (firmware / "fw.bin").write_bytes(bytes(i % 251 for i in range(5000)))
    port = free_udp_port()
    rest = coap_rest(port, DEVICES)
    rest["deviceApi"].update({"provisioning": {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET},
                              "firmware": {"path": str(tmp_path / "firmware")}, "attributeRequestTimeout": 1500,
                              "clientRpcTimeout": 1500})
    gw = make_daemon(rest)
    gw.coap_port = port
    return gw


@pytest.fixture
def client(gateway):
    raw = RawClient(gateway.coap_port)
    yield raw
    raw.close()


def test_telemetry_and_attributes_are_stored_and_published(gateway, client, mqtt_subscriber) -> None:
    answer = client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"temperature": 21.5, "humidity": 40}')
    assert answer.code == Code.CREATED and answer.payload == b""
    with_ts = b'{"ts": 1451649600512, "values": {"temperature": 22}}'
    assert client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", with_ts).code == Code.CREATED
    array = b'[{"a": 1}, {"ts": 1451649600513, "values": {"b": 2}}]'
    assert client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", array).code == Code.CREATED
    attributes = b'{"firmwareVersion": "1.2", "serial": 77}'
    assert client.request(Code.POST, f"api/v1/{TOKEN}/attributes", attributes,
                          content_format=50).code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for(DEVICE)) >= 4, 15)
    entries = mqtt_subscriber.telemetry_for(DEVICE)
    assert entries[0]["values"] == {"temperature": 21.5, "humidity": 40}
    assert entries[1] == {"ts": 1451649600512, "values": {"temperature": 22}}
    assert entries[2]["values"] == {"a": 1} and entries[3] == {"ts": 1451649600513, "values": {"b": 2}}
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.attributes_for(DEVICE), 10)
    assert mqtt_subscriber.attributes_for(DEVICE) == {"firmwareVersion": "1.2", "serial": 77}
    assert {"device": DEVICE, "type": "thermometer"} in mqtt_subscriber.connects()


def test_error_codes(gateway, client, mqtt_subscriber) -> None:
    unknown = client.request(Code.POST, "api/v1/WRONG/telemetry", b'{"a": 1}')
    assert unknown.code == Code.UNAUTHORIZED and unknown.payload == b""  # nothing larger than the request
    assert client.request(Code.POST, "api/v1", b'{"a": 1}').code == Code.NOT_FOUND
    bad = client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"a": ')
    assert bad.code == Code.BAD_REQUEST and b"JSON" in bad.payload
    empty = client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b"")
    assert empty.code == Code.BAD_REQUEST and b"empty" in empty.payload
    assert client.request(Code.POST, f"api/v1/{TOKEN}/attributes", b"[1]").code == Code.BAD_REQUEST
    assert client.request(Code.GET, f"api/v1/{TOKEN}/telemetry").code == Code.BAD_REQUEST
    assert client.request(Code.POST, f"api/v1/{TOKEN}/nothing", b"{}").code == Code.BAD_REQUEST
    assert client.request(Code.PUT, f"api/v1/{TOKEN}/telemetry", b"{}").code == Code.METHOD_NOT_ALLOWED
    assert client.request(Code.GET, f"api/v1/{TOKEN}/rpc").code == Code.BAD_REQUEST  # RPC needs Observe
    cbor = client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b"\xa1aa\x01", content_format=60)
    assert cbor.code == Code.UNSUPPORTED_CONTENT_FORMAT
    assert client.request(Code.GET, "other/path").code == Code.NOT_FOUND
    # nothing of the above was stored
    assert not mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.on("v1/gateway/telemetry"), 1)
    assert TOKEN not in gateway.log_text()


def test_duplicate_confirmable_is_stored_once(gateway, client, mqtt_subscriber) -> None:
    message = client.build(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"seq": 1}')
    client.send(message)
    client.send(message)  # a retransmission while the first is still being stored: not stored again
    assert client.response(message.token, 5).code == Code.CREATED
    for _ in range(2):  # the ACK was lost and the device retransmits: answered from the exchange cache
        client.send(message)
        answer = client.response(message.token, 5)
        assert answer.code == Code.CREATED and answer.mid == message.mid
    assert client.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"seq": 2}').code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for(DEVICE)) >= 2, 15)
    assert [e["values"]["seq"] for e in mqtt_subscriber.telemetry_for(DEVICE)] == [1, 2]


def _answer_attribute_requests(subscriber, values: dict[bool, dict], count: int) -> None:
    for index in range(count):
        assert subscriber.wait_for(lambda m, i=index: len(
            [1 for t, _, _ in m if t == "v1/gateway/attributes/request"]) > i, 15)
        request = subscriber.on("v1/gateway/attributes/request")[index]
        found = {k: v for k, v in values[request["client"]].items() if k in request["keys"]}
        subscriber.publish("v1/gateway/attributes/response",
                           {"id": request["id"], "device": request["device"], "values": found})


def test_attribute_request_repeated_keys_not_found_and_timeout(gateway, client, mqtt_subscriber) -> None:
    message = client.build(Code.GET, f"api/v1/{TOKEN}/attributes",
                           query=("clientKeys=attribute1", "clientKeys=attribute2", "sharedKeys=shared1,shared2"))
    client.send(message)
    _answer_attribute_requests(mqtt_subscriber, {True: {"attribute1": "v1", "attribute2": True},
                                                 False: {"shared1": 5}}, 2)
    answer = client.response(message.token, 10)
    assert answer.code == Code.CONTENT
    assert json.loads(answer.payload) == {"client": {"attribute1": "v1", "attribute2": True}, "shared": {"shared1": 5}}
    requests = mqtt_subscriber.on("v1/gateway/attributes/request")
    assert [(r["client"], r["keys"]) for r in requests] == [(True, ["attribute1", "attribute2"]),
                                                            (False, ["shared1", "shared2"])]
    mqtt_subscriber.clear()
    message = client.build(Code.GET, f"api/v1/{TOKEN}/attributes", query=("sharedKeys=missing",))
    client.send(message)
    _answer_attribute_requests(mqtt_subscriber, {False: {}}, 1)
    assert client.response(message.token, 10).code == Code.NOT_FOUND
    # ThingsBoard never answers: 5.04 after attributeRequestTimeout (ThingsBoard's CoAP sends nothing)
    timeout = client.request(Code.GET, f"api/v1/{TOKEN}/attributes", query=("sharedKeys=x",))
    assert timeout.code == Code.GATEWAY_TIMEOUT


def test_claim_provision_and_client_rpc(gateway, client, mqtt_subscriber) -> None:
    claim = client.request(Code.POST, f"api/v1/{TOKEN}/claim", b'{"secretKey": "value", "durationMs": 60000}')
    assert claim.code == Code.CREATED
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.on("v1/gateway/claim"), 10)
    assert mqtt_subscriber.on("v1/gateway/claim")[0] == {DEVICE: {"secretKey": "value", "durationMs": 60000}}

    body = json.dumps({"deviceName": "Provisioned C", "provisionDeviceKey": KEY,
                       "provisionDeviceSecret": SECRET}).encode()
    ok = client.request(Code.POST, "api/v1/provision", body)
    assert ok.code == Code.CREATED
    answer = json.loads(ok.payload)
    assert answer["status"] == "SUCCESS" and answer["credentialsType"] == "ACCESS_TOKEN"
    wrong = client.request(Code.POST, "api/v1/provision", body.replace(SECRET.encode(), b"nope"))
    assert wrong.code == Code.BAD_REQUEST
    assert json.loads(wrong.payload) == {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
    again = client.request(Code.POST, "api/v1/provision", body)
    assert again.code == Code.BAD_REQUEST and json.loads(again.payload)["status"] == "FAILURE"
    token = answer["credentialsValue"]
    assert client.request(Code.POST, f"api/v1/{token}/telemetry", b'{"p": 1}').code == Code.CREATED

    message = client.build(Code.POST, f"api/v1/{TOKEN}/rpc", b'{"method": "getCurrentTime", "params": {}}')
    client.send(message)
    assert mqtt_subscriber.wait_for(lambda m: any(t.startswith("v1/devices/me/rpc/request/") for t, _, _ in m), 10)
    topic, request, _ = next(m for m in mqtt_subscriber.messages if m[0].startswith("v1/devices/me/rpc/request/"))
    assert request == {"method": "getCurrentTime", "params": {"device": DEVICE, "params": {}}}
    mqtt_subscriber.publish(topic.replace("request", "response"), {"time": "12:54"})
    answer = client.response(message.token, 10)
    assert answer.code == Code.CONTENT and json.loads(answer.payload) == {"time": "12:54"}
    late = client.request(Code.POST, f"api/v1/{TOKEN}/rpc", b'{"method": "nobodyAnswers"}')
    assert late.code == Code.GATEWAY_TIMEOUT


def test_firmware_block2_with_aiocoap(gateway) -> None:
    package = bytes(i % 251 for i in range(5000))

    async def fetch() -> list[Message]:
        context = await Context.create_client_context()
        try:
            base = f"coap://127.0.0.1:{gateway.coap_port}/fw/{TOKEN}?title=COAP_FW&version=2.0"
            whole = await context.request(Message(code=Code.GET, uri=base)).response
            chunk = await context.request(Message(code=Code.GET, uri=base + "&size=100&chunk=3")).response
            missing = await context.request(Message(code=Code.GET, uri=base.replace("2.0", "9.9"))).response
            software = await context.request(Message(code=Code.GET, uri=base.replace("/fw/", "/sw/"))).response
            return [whole, chunk, missing, software]
        finally:
            await context.shutdown()

    whole, chunk, missing, software = asyncio.run(fetch())
    assert whole.code == Code.CONTENT and whole.payload == package  # aiocoap fetched it block by block
    assert chunk.payload == package[300:400]
    assert missing.code == Code.NOT_FOUND
    assert software.payload == package


def test_firmware_blocks_by_hand(gateway, client) -> None:
    package = bytes(i % 251 for i in range(5000))
    path, query = f"fw/{TOKEN}", ("title=COAP_FW", "version=2.0")
    first = client.request(Code.GET, path, query=query)
    assert first.opt.block2.block_number == 0 and first.opt.block2.more and len(first.payload) == 1024
    assert first.opt.size2 == 5000
    got = b""
    for number in range(20):
        block = client.request(Code.GET, path, query=query, block2=(number, 4))  # 256-byte blocks
        got += block.payload
        if not block.opt.block2.more:
            break
    assert got == package and number == 19
    assert client.request(Code.POST, path, b"", query=query).code == Code.METHOD_NOT_ALLOWED


def test_a_taken_udp_port_stops_the_start_with_a_clear_error(make_daemon) -> None:
    import socket

    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        gw = make_daemon(coap_rest(holder.getsockname()[1], DEVICES), start=False)
        with pytest.raises(AssertionError) as failed:
            gw.start()
        assert "exited with 1" in str(failed.value)
        log = gw.log_text()
        assert f"cannot listen on udp 127.0.0.1:{holder.getsockname()[1]}" in log
        assert "deviceApi.coap.port" in log and "Traceback" not in log
    finally:
        holder.close()
