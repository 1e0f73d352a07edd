"""Statistics to ThingsBoard end to end: a real daemon, a real broker, a subscriber on v1/devices/me/telemetry."""
from __future__ import annotations

from typing import Any

import requests

from tests.e2e.test_operations import REST

PERIOD = 1  # seconds: short, so the test sees several messages quickly
STATISTICS = {"statistics": {"enable": True, "statsSendPeriodInSeconds": PERIOD}}


def own_telemetry(subscriber: Any) -> list[dict[str, Any]]:
    """The values of every statistics message, in order."""
    return [body["values"] for body in subscriber.on("v1/devices/me/telemetry")
            if isinstance(body, dict) and isinstance(body.get("values"), dict)]


def total(messages: list[dict[str, Any]], key: str) -> int:
    return sum(int(values.get(key, 0)) for values in messages)


def test_statistics_reach_the_gateway_device_with_the_reference_keys(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(REST, general=STATISTICS)
    for index in range(3):
        assert requests.post(daemon.url("/sensors"), json={"name": f"dev{index}", "temp": 20 + index},
                             timeout=5).status_code == 200
    assert requests.post(daemon.url("/sensors"), data=b'{"name": ', timeout=5).status_code == 400
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": "dev0", "data": {"setpoint": 1}})

    assert mqtt_subscriber.wait_for(
        lambda _: total(own_telemetry(mqtt_subscriber), "RESTConnectorEventsSent") >= 3
        and total(own_telemetry(mqtt_subscriber), "msgsReceivedFromPlatform") >= 1, timeout=30), \
        daemon.log_text()
    messages = own_telemetry(mqtt_subscriber)
    keys = {"eventsProduced", "eventsSent", "RESTConnectorEventsProduced", "RESTConnectorEventsSent",
            "msgsSentToPlatform", "allBytesSentToTB", "msgsReceivedFromPlatform", "storageMsgPulled",
            "platformTsProduced", "platformAttrProduced"}
    assert all(set(values) == keys for values in messages), messages
    # per-period counts: summed over the messages, each request counts once (the 400 produced nothing)
    assert total(messages, "RESTConnectorEventsProduced") == total(messages, "eventsProduced") == 3
    assert total(messages, "eventsSent") == 3 and total(messages, "platformTsProduced") == 3
    assert total(messages, "platformAttrProduced") == 0
    assert total(messages, "storageMsgPulled") >= 3  # the device events, and earlier statistics messages
    assert total(messages, "msgsSentToPlatform") >= 1 and total(messages, "allBytesSentToTB") > 0
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
