"""Statistics to ThingsBoard end to end: a real daemon, a real broker, a subscriber on v1/devices/me/telemetry."""
from __future__ import annotations

import json
import threading
from typing import Any

import requests
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.e2e.test_operations import REST, scrape, wait_for
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port
from tests.fixtures.daemon import free_port
from tests.fixtures.http_target import HttpTarget

PERIOD = 1  # seconds: short, so the test sees several messages quickly
STATISTICS = {"statistics": {"enable": True, "statsSendPeriodInSeconds": PERIOD}}


def own_telemetry(subscriber: Any) -> list[dict[str, Any]]:
    """The values of every statistics message, in order."""
    return [body["values"] for body in subscriber.on("v1/devices/me/telemetry")
            if isinstance(body, dict) and isinstance(body.get("values"), dict)]


def total(messages: list[dict[str, Any]], key: str) -> int:
    return sum(int(values.get(key, 0)) for values in messages)


def with_relay(target: str) -> dict[str, Any]:
    """REST plus one attributeUpdates entry relaying to ``target`` (the bytes sent to devices)."""
    return {**REST, "attributeUpdates": [{
        "deviceNameFilter": ".*", "attributeFilter": ".*", "HTTPMethod": "POST", "timeout": 5, "tries": 1,
        "requestUrlExpression": target + "/ok/${deviceName}", "security": {"type": "anonymous"},
        "httpHeaders": {"Content-Type": "application/json"},
        "valueExpression": "{\"device\": \"${deviceName}\", \"${attributeKey}\": ${attributeValue}}"}]}


def test_statistics_reach_the_gateway_device_with_the_reference_keys(make_daemon, mqtt_subscriber) -> None:
    target = HttpTarget().start()
    try:
        daemon = make_daemon(with_relay(target.url), general=STATISTICS)
        bodies = [json.dumps({"name": f"dev{index}", "temp": 20 + index}).encode() for index in range(3)]
        bodies.append(b'{"name": ')  # refused (400), but received all the same
        for body in bodies:
            answer = requests.post(daemon.url("/sensors"), data=body, timeout=5,
                                   headers={"Content-Type": "application/json"})
            assert answer.status_code == (400 if body == bodies[-1] else 200), answer.text
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": "dev0", "data": {"setpoint": 1}})
        (relayed,) = target.wait_count("/ok/dev0", 1)

        assert mqtt_subscriber.wait_for(
            lambda _: total(own_telemetry(mqtt_subscriber), "RESTConnectorEventsSent") >= 3
            and total(own_telemetry(mqtt_subscriber), "msgsReceivedFromPlatform") >= 1
            and total(own_telemetry(mqtt_subscriber), "allBytesSentToDevices") >= 1, timeout=30), \
            daemon.log_text()
    finally:
        target.close()
    messages = own_telemetry(mqtt_subscriber)
    keys = {"eventsProduced", "eventsSent", "RESTConnectorEventsProduced", "RESTConnectorEventsSent",
            "msgsSentToPlatform", "allBytesSentToTB", "msgsReceivedFromPlatform", "storageMsgPulled",
            "platformTsProduced", "platformAttrProduced", "receivedBytesFromDevices", "allBytesSentToDevices"}
    assert all(set(values) == keys for values in messages), messages
    # per-period counts: summed over the messages, each request counts once (the 400 produced nothing)
    assert total(messages, "RESTConnectorEventsProduced") == total(messages, "eventsProduced") == 3
    assert total(messages, "eventsSent") == 3 and total(messages, "platformTsProduced") == 3
    assert total(messages, "platformAttrProduced") == 0
    assert total(messages, "storageMsgPulled") >= 3  # the device events, and earlier statistics messages
    assert total(messages, "msgsSentToPlatform") >= 1 and total(messages, "allBytesSentToTB") > 0
    # every request body, the refused one too; and the relayed body the target received
    assert total(messages, "receivedBytesFromDevices") == sum(len(body) for body in bodies)
    assert relayed.json() == {"device": "dev0", "setpoint": 1}
    assert total(messages, "allBytesSentToDevices") == len(relayed.body)
    # the device data itself went through as before
    assert [e["values"]["temp"] for d in range(3) for e in mqtt_subscriber.telemetry_for(f"dev{d}")] == [20, 21, 22]
    # and a statistics message is stored like device data: nothing is left behind in storage
    metrics = requests.get(daemon.admin_url("/metrics"), timeout=5).text
    assert "rest_gateway_mqtt_events_dead_lettered_total 0.0" in metrics


def test_statistics_are_off_by_default(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(REST)
    assert requests.post(daemon.url("/sensors"), json={"name": "dev0", "temp": 1}, timeout=5).status_code == 200
    assert mqtt_subscriber.wait_for(lambda _: len(mqtt_subscriber.telemetry_for("dev0")) == 1)
    # three periods of the test above pass without a statistics message
    assert not mqtt_subscriber.wait_for(lambda _: bool(own_telemetry(mqtt_subscriber)), timeout=3 * PERIOD)


def test_device_api_bytes_over_http_and_coap(make_daemon, mqtt_subscriber) -> None:
    """receivedBytesFromDevices counts CoAP payloads (fast path and aiocoap's path) beside HTTP bodies;
    allBytesSentToDevices counts a long poll's update and an RPC a CoAP observer acknowledged."""
    token, device = "STATS_TOKEN", "Stats device"
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": token, "deviceName": device}])
    rest["port"] = str(free_port())
    daemon = make_daemon(rest, general=STATISTICS)
    http_body = b'{"temp": 21}'
    assert requests.post(daemon.url(f"/api/v1/{token}/telemetry"), data=http_body, timeout=5).status_code == 200

    client = RawClient(port)
    try:
        fast = client.build(Code.POST, f"api/v1/{token}/telemetry", b'{"temp": 22}')  # plain CON post: fast path
        slow = client.build(Code.POST, f"api/v1/{token}/attributes", b'{"fw": "1.0"}', mtype=Type.NON)  # aiocoap
        for message in (fast, slow):
            client.send(message)
            answer = client.response(message.token)
            assert answer is not None and answer.code == Code.CREATED
        observe = client.build(Code.GET, f"api/v1/{token}/rpc", observe=0)
        client.send(observe)
        assert client.response(observe.token).code == Code.VALID  # 2.03: observing
        mqtt_subscriber.publish("v1/gateway/rpc", {"device": device, "data": {"id": 7, "method": "m", "params": 1}})
        rpc = client.response(observe.token)
        assert rpc is not None and json.loads(rpc.payload) == {"id": 7, "method": "m", "params": 1}
    finally:
        client.close()
    poll = {}

    def long_poll() -> None:
        poll["answer"] = requests.get(daemon.url(f"/api/v1/{token}/attributes/updates?timeout=20000"), timeout=30)

    waiting = threading.Thread(target=long_poll)
    waiting.start()
    assert wait_for(lambda: any(name == "rest_gateway_device_api_polls_waiting" and count >= 1
                                for (name, _labels), count in scrape(daemon).items())), "the long poll never waited"
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": device, "data": {"mode": "eco"}})
    waiting.join(30)
    assert poll["answer"].status_code == 200 and poll["answer"].json() == {"mode": "eco"}

    received = len(http_body) + len(fast.payload) + len(slow.payload)
    sent = len(poll["answer"].content) + len(rpc.payload)
    assert mqtt_subscriber.wait_for(
        lambda _: total(own_telemetry(mqtt_subscriber), "receivedBytesFromDevices") >= received
        and total(own_telemetry(mqtt_subscriber), "allBytesSentToDevices") >= sent, timeout=30), daemon.log_text()
    messages = own_telemetry(mqtt_subscriber)
    assert total(messages, "receivedBytesFromDevices") == received
    assert total(messages, "allBytesSentToDevices") == sent

