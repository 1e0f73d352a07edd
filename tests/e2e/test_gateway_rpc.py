"""Gateway RPCs and device inactivity end to end: the daemon as a process, a real broker, a real
MQTT client playing ThingsBoard (it sends RPCs to the gateway device and records what comes back)."""
from __future__ import annotations

import os
import time
from typing import Any

import requests

from gateway import __version__
from gateway.cpus import describe as describe_cpus
from tests.fixtures.broker import Subscriber
from tests.fixtures.daemon import DaemonProcess

REQUEST = "v1/devices/me/rpc/request/{}"
RESPONSE = "v1/devices/me/rpc/response/{}"
WAIT = 20.0  # generous: a condition's deadline, never a measured speed


def rest() -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": "0", "SSL": False, "mapping": [{
        "endpoint": "/data", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
        "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                      "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}]}


def post(daemon: DaemonProcess, name: str, temp: float) -> None:
    response = requests.post(daemon.url("/data"), json={"name": name, "temp": temp}, timeout=10)
    assert response.status_code == 200, response.text


def answer(subscriber: Subscriber, request_id: int) -> Any:
    """ThingsBoard's view of the gateway's answer to RPC ``request_id`` (waits for it)."""
    topic = RESPONSE.format(request_id)
    assert subscriber.wait_for(lambda _m: bool(subscriber.on(topic)), WAIT), f"no answer on {topic}"
    return subscriber.on(topic)[0]


def call(subscriber: Subscriber, request_id: int, method: str, params: Any = None) -> Any:
    subscriber.publish(REQUEST.format(request_id), {"method": method, "params": {} if params is None else params})
    return answer(subscriber, request_id)


def telemetry_count(subscriber: Subscriber, device: str) -> int:
    return len(subscriber.telemetry_for(device))


def wait_telemetry(subscriber: Subscriber, device: str, count: int) -> None:
    assert subscriber.wait_for(lambda _m: telemetry_count(subscriber, device) >= count, WAIT), \
        f"{device}: {telemetry_count(subscriber, device)} of {count} telemetry entries"


def test_gateway_rpcs_answer_in_the_reference_shapes(make_daemon, mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest())
    post(daemon, "SN-RPC-1", 21.5)
    wait_telemetry(mqtt_subscriber, "SN-RPC-1", 1)

    assert call(mqtt_subscriber, 11, "gateway_ping") == {"code": 200, "resp": "pong"}
    assert call(mqtt_subscriber, 12, "ping") == {"code": 200, "resp": "pong"}
    assert call(mqtt_subscriber, 13, "gateway_version") == {
        "code": 200, "resp": {"current_version": __version__, "latest_version": None}}
    assert call(mqtt_subscriber, 14, "gateway_devices") == {"code": 200, "resp": {"SN-RPC-1": "REST Connector"}}
    # the subscriber may see the telemetry before the gateway has its PUBACK and trims storage: ask again
    deadline = time.monotonic() + WAIT
    for request_id in range(1000, 2000):
        stats = call(mqtt_subscriber, request_id, "gateway_stats")
        if stats["eventsStored"] == 0 or time.monotonic() > deadline:
            break
    assert stats["eventsStored"] == 0, stats
    assert stats["eventsProduced"] == 1 and stats["restconnectorEventsProduced"] == 1
    assert stats["eventsSent"] == 1 and stats["devices"] == 1

    unknown = call(mqtt_subscriber, 16, "gateway_teleport")
    assert unknown["code"] == 404 and unknown["error"] == "Method not found"
    assert call(mqtt_subscriber, 17, "gateway_reboot")["code"] == 501
    assert call(mqtt_subscriber, 18, "gateway_restart", "soon")["code"] == 400

    mqtt_subscriber.publish(REQUEST.format(19), b"{not json")
    bad = answer(mqtt_subscriber, 19)
    assert bad["code"] == 400 and "not JSON" in bad["error"]
    mqtt_subscriber.publish(REQUEST.format(20), {"params": {}})
    assert answer(mqtt_subscriber, 20)["code"] == 400

    assert daemon.proc.poll() is None  # nothing above harmed the daemon
    post(daemon, "SN-RPC-1", 22.5)
    wait_telemetry(mqtt_subscriber, "SN-RPC-1", 2)


def _limits_requests(subscriber: Subscriber) -> list[str]:
    """Topics of the gateway's getSessionLimits requests: one per MQTT session it opened."""
    return [topic for topic, body, _ in subscriber.messages
            if topic.startswith("v1/devices/me/rpc/request/") and isinstance(body, dict)
            and body.get("method") == "getSessionLimits"]


def test_gateway_restart_answers_then_restarts_the_same_process(make_daemon, mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest())
    assert mqtt_subscriber.wait_for(lambda _m: len(_limits_requests(mqtt_subscriber)) == 1, WAIT)
    post(daemon, "SN-RESTART", 1.0)
    wait_telemetry(mqtt_subscriber, "SN-RESTART", 1)
    pid = daemon.proc.pid

    assert call(mqtt_subscriber, 31, "gateway_restart") == {"success": True}
    # a new MQTT session means the gateway started again; it is the same process (re-exec)
    assert mqtt_subscriber.wait_for(lambda _m: len(_limits_requests(mqtt_subscriber)) == 2, WAIT), \
        daemon.log_text()
    assert daemon.proc.poll() is None and daemon.proc.pid == pid
    assert "restart requested by ThingsBoard" in daemon.log_text()
    assert call(mqtt_subscriber, 32, "gateway_ping") == {"code": 200, "resp": "pong"}

    def accepts() -> bool:
        try:
            return requests.get(daemon.url("/health"), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False
    assert mqtt_subscriber.wait_for(lambda _m: accepts(), WAIT)
    post(daemon, "SN-RESTART", 2.0)
    wait_telemetry(mqtt_subscriber, "SN-RESTART", 2)
    # the fresh process counts from zero, and a clean stop still ends it with 0
    assert call(mqtt_subscriber, 33, "gateway_stats")["eventsProduced"] == 1
    assert daemon.stop() == 0
    # each run chose its CPU from all of them: the restart did not inherit the first run's choice
    runs = [line for line in daemon.log_text().splitlines() if "running on CPU" in line]
    assert len(runs) == 2, runs
    if len(os.sched_getaffinity(0)) > 1:
        everything = describe_cpus(os.sched_getaffinity(0))
        assert all(f" of {everything} (cpus: auto" in line for line in runs), runs


def test_mqtt311_gateway_does_not_answer_its_own_echoed_requests(make_daemon, mqtt_subscriber: Subscriber) -> None:
    """A plain MQTT 3.1.1 broker hands the gateway its own getSessionLimits request back on
    v1/devices/me/rpc/request/+; answering it would feed "Method not found" to its own limits wait."""
    make_daemon(rest(), thingsboard={"protocol": "mqtt311"})
    assert mqtt_subscriber.wait_for(lambda _m: bool(_limits_requests(mqtt_subscriber)), WAIT)
    own_id = _limits_requests(mqtt_subscriber)[0].rsplit("/", 1)[1]
    assert call(mqtt_subscriber, 41, "gateway_ping") == {"code": 200, "resp": "pong"}
    # the ping answer came after the echo would have been answered (both queue on the same link)
    assert mqtt_subscriber.on(RESPONSE.format(own_id)) == []
    assert len(mqtt_subscriber.on(RESPONSE.format(41))) == 1


def _sequence(subscriber: Subscriber, device: str) -> list[str]:
    """What ThingsBoard saw for ``device``, in order: connect, telemetry, disconnect."""
    seen = []
    for topic, body, _ in subscriber.messages:
        if not isinstance(body, dict):
            continue
        if topic in ("v1/gateway/connect", "v1/gateway/disconnect") and body.get("device") == device:
            seen.append(topic.rsplit("/", 1)[1])
        elif topic == "v1/gateway/telemetry" and device in body:
            seen.append("telemetry")
    return seen


def test_a_silent_device_is_disconnected_and_connected_again_by_its_next_message(
        make_daemon, mqtt_subscriber: Subscriber) -> None:
    activity = {"checkDeviceInactivity": True, "inactivityTimeoutSeconds": 1, "inactivityCheckPeriodSeconds": 0.2}
    daemon = make_daemon(rest(), thingsboard={"checkingDeviceActivity": activity})
    post(daemon, "SN-IDLE", 1.0)
    assert mqtt_subscriber.wait_for(lambda _m: "disconnect" in _sequence(mqtt_subscriber, "SN-IDLE"), WAIT)
    assert mqtt_subscriber.on("v1/gateway/disconnect") == [{"device": "SN-IDLE"}]
    assert call(mqtt_subscriber, 51, "gateway_devices") == {"code": 200, "resp": {}}

    post(daemon, "SN-IDLE", 2.0)
    assert mqtt_subscriber.wait_for(lambda _m: _sequence(mqtt_subscriber, "SN-IDLE")[-1:] == ["telemetry"]
                                    and len(_sequence(mqtt_subscriber, "SN-IDLE")) >= 4, WAIT)
    sequence = _sequence(mqtt_subscriber, "SN-IDLE")
    assert sequence[:5] == ["connect", "telemetry", "disconnect", "connect", "telemetry"], sequence
    assert [e["values"] for e in mqtt_subscriber.telemetry_for("SN-IDLE")] == [{"temp": 1.0}, {"temp": 2.0}]
    assert "SN-IDLE disconnected from ThingsBoard" in daemon.log_text()
    metrics = dict(line.rsplit(" ", 1) for line in requests.get(daemon.admin_url("/metrics"), timeout=10)
                   .text.splitlines() if line and not line.startswith("#"))
    # at least 1: SN-IDLE may fall silent (and be disconnected) again by now
    assert float(metrics["rest_gateway_mqtt_devices_disconnected_total"]) >= 1
    assert float(metrics["rest_gateway_mqtt_gateway_rpcs_total"]) == 1
