"""Remote configuration end to end: the daemon as a process, a real broker, and a real MQTT client playing
ThingsBoard (it answers the gateway's attribute request, sends shared attribute updates to the gateway
device and records the client attributes the gateway reports)."""
from __future__ import annotations

import copy
import json
import os
import signal
import time
from typing import Any

import pytest
import requests

from tests.fixtures.broker import Subscriber
from tests.fixtures.daemon import ACCESS_TOKEN, DaemonProcess

ATTRIBUTES = "v1/devices/me/attributes"
REQUEST_PREFIX = "v1/devices/me/attributes/request/"
RESPONSE = "v1/devices/me/attributes/response/{}"
STATUS = "remoteConfigurationStatus"
CONNECTOR = "REST Connector"
PASSWORD = "s3cret-pass-4711"
BEARER = "bearer-token-9c1e77"
WAIT = 20.0  # generous: a condition's deadline, never a measured speed
REMOTE_ON = {"remoteConfiguration": True}


def rest() -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": "0", "SSL": False, "mapping": [
        {"endpoint": "/data", "HTTPMethod": ["POST"],
         "security": {"type": "basic", "username": "user", "password": PASSWORD},
         "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                       "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}},
        {"endpoint": "/tok", "HTTPMethod": ["POST"], "security": {"type": "bearer", "tokens": [BEARER]},
         "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                       "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}]}


def new_mapping(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
            "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                          "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}


class Thingsboard:
    """The subscriber seen as ThingsBoard: what the gateway reported, and what we sent it."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.sub = subscriber
        self.sent: list[Any] = []

    def reports(self) -> list[dict[str, Any]]:
        """Client attribute publishes of the gateway (the broker also echoes ours on the same topic)."""
        return [body for body in self.sub.on(ATTRIBUTES) if isinstance(body, dict) and body not in self.sent]

    def reported(self, key: str) -> Any:
        assert self.sub.wait_for(lambda _m: any(key in body for body in self.reports()), WAIT), \
            f"{key} never reported: {self.reports()}"
        return [body[key] for body in self.reports() if key in body][-1]

    def statuses(self) -> list[dict[str, Any]]:
        return [body[STATUS] for body in self.reports() if STATUS in body]

    def next_status(self, count: int) -> dict[str, Any]:
        """The ``count``-th outcome reported (1-based), once it is there."""
        assert self.sub.wait_for(lambda _m: len(self.statuses()) >= count, WAIT), self.statuses()
        return self.statuses()[count - 1]

    def send(self, shared: dict[str, Any]) -> None:
        self.sent.append(shared)
        self.sub.publish(ATTRIBUTES, shared)

    def answer_request(self, shared: dict[str, Any]) -> list[str]:
        """Answer the gateway's attribute request on connect with ``shared``; returns the keys it asked for."""
        def requests_seen() -> list[tuple[str, Any]]:
            return [(t, b) for t, b, _ in self.sub.messages if t.startswith(REQUEST_PREFIX)]
        assert self.sub.wait_for(lambda _m: bool(requests_seen()), WAIT), "no attribute request"
        topic, body = requests_seen()[0]
        self.sub.publish(RESPONSE.format(topic[len(REQUEST_PREFIX):]), {"shared": shared})
        return body["sharedKeys"].split(",")


def post(daemon: DaemonProcess, endpoint: str, **kwargs: Any) -> int:
    return requests.post(daemon.url(endpoint), json={"name": "SN-RC", "temp": 1.5}, timeout=10, **kwargs).status_code


def connector_change(config: dict[str, Any]) -> dict[str, Any]:
    """The shared attribute ThingsBoard's gateway UI writes for the connector (the reference's shape)."""
    return {CONNECTOR: {"name": CONNECTOR, "type": "rest", "configuration": "rest.json", "logLevel": "INFO",
                        "configurationJson": config, "ts": 1}}


def on_disk(daemon: DaemonProcess) -> dict[str, Any]:
    with open(os.path.join(daemon.workdir, "rest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def backups(daemon: DaemonProcess) -> list[str]:
    folder = os.path.join(daemon.workdir, "backup")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("protocol", ["broker's", "mqtt311"])
def test_reports_redacted_and_applies_a_connector_change(make_daemon, mqtt_subscriber: Subscriber,
                                                          protocol: str) -> None:
    """With MQTT 3.1.1 the broker echoes the gateway's own reports back to it: they must not loop."""
    daemon = make_daemon(rest(), thingsboard={**REMOTE_ON, **({"protocol": protocol} if protocol == "mqtt311" else {})})
    tb = Thingsboard(mqtt_subscriber)
    assert set(tb.answer_request({})) == {"RemoteLoggingLevel", CONNECTOR}

    general = tb.reported("general_configuration")
    assert general["security"]["accessToken"] == "***" and general["remoteConfiguration"] is True
    assert tb.reported("storage_configuration")["type"] == "sqlite"
    assert tb.reported("active_connectors") == [CONNECTOR]
    assert tb.reported("Version")
    reported = tb.reported(CONNECTOR)
    assert reported["type"] == "rest" and reported["configuration"] == "rest.json"
    assert reported["configurationJson"]["mapping"][0]["security"]["password"] == "***"
    assert reported["configurationJson"]["mapping"][1]["security"]["tokens"] == "***"
    everything = json.dumps(tb.reports())
    assert ACCESS_TOKEN not in everything and PASSWORD not in everything and BEARER not in everything

    # the UI sends back what it was shown (secrets masked) plus a new endpoint
    changed = copy.deepcopy(reported["configurationJson"])
    changed["mapping"].append(new_mapping("/new"))
    original = on_disk(daemon)
    assert post(daemon, "/new") == 404
    tb.send(connector_change(changed))

    status = tb.next_status(1)
    assert status["status"] == "ok" and status["outcome"] == "applied", status
    assert post(daemon, "/new") == 200
    assert post(daemon, "/data", auth=("user", PASSWORD)) == 200  # the masked password kept its value
    assert post(daemon, "/tok", headers={"Authorization": f"Bearer {BEARER}"}) == 200
    disk = on_disk(daemon)
    assert [m["endpoint"] for m in disk["mapping"]] == ["/data", "/tok", "/new"]
    assert disk["mapping"][0]["security"]["password"] == PASSWORD
    saved = backups(daemon)
    assert len(saved) == 1 and saved[0].startswith("rest.backup.") and status["backup"].endswith(saved[0])
    with open(os.path.join(daemon.workdir, "backup", saved[0]), encoding="utf-8") as handle:
        assert json.load(handle) == original
    # the new configuration is reported again, still masked
    assert tb.sub.wait_for(lambda _m: len([b for b in tb.reports() if CONNECTOR in b]) >= 2, WAIT)
    assert len(tb.reported(CONNECTOR)["configurationJson"]["mapping"]) == 3
    assert PASSWORD not in json.dumps(tb.reports())
    assert not _debug_line_after(daemon, tb, 0, 1)  # a round trip through the gateway: nothing else pending
    assert len(tb.statuses()) == 1 and len([b for b in tb.reports() if CONNECTOR in b]) == 2, tb.reports()


def test_invalid_or_restart_only_changes_are_refused_and_rolled_back(make_daemon,
                                                                       mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest(), thingsboard=REMOTE_ON)
    tb = Thingsboard(mqtt_subscriber)
    tb.answer_request({})
    original = on_disk(daemon)

    invalid = copy.deepcopy(original)
    broken = new_mapping("/broken")
    broken["converter"]["type"] = "telepathy"
    invalid["mapping"].append(broken)
    tb.send(connector_change(invalid))
    status = tb.next_status(1)
    assert status["status"] == "error" and status["outcome"] == "invalid", status
    assert any("/mapping/2/converter" in error for error in status["errors"]), status
    assert on_disk(daemon) == original and backups(daemon) == []  # checked before anything was written

    moved = copy.deepcopy(original)
    moved["port"] = str(int(original["port"]) + 1)  # valid, but the listener needs a restart
    moved["mapping"].append(new_mapping("/new"))
    tb.send(connector_change(moved))
    status = tb.next_status(2)
    assert status["status"] == "error" and status["outcome"] == "restart_required", status
    assert any("port" in error for error in status["errors"]), status
    assert any("restored from" in error for error in status["errors"]), status
    assert on_disk(daemon) == original and len(backups(daemon)) == 1

    tb.send({"storage_configuration": {"type": "memory"}})
    status = tb.next_status(3)
    assert status["attribute"] == "storage_configuration" and status["outcome"] == "refused"
    tb.send({"Other Connector": {"name": "Other Connector", "type": "rest", "configurationJson": moved}})
    assert tb.next_status(4)["outcome"] == "refused" and "adding a connector" in tb.next_status(4)["errors"][0]
    tb.send({"active_connectors": [CONNECTOR, "Other Connector"]})
    assert tb.next_status(5)["status"] == "error"
    tb.send({"active_connectors": [CONNECTOR]})
    assert tb.next_status(6) | {"ts": 0} == {"ts": 0, "attribute": "active_connectors", "status": "ok",
                                              "outcome": "unchanged", "errors": []}

    # the old configuration kept serving throughout
    assert post(daemon, "/new") == 404 and post(daemon, "/broken") == 404
    assert post(daemon, "/data", auth=("user", PASSWORD)) == 200
    assert daemon.proc.poll() is None


def _debug_line_after(daemon: DaemonProcess, tb: Thingsboard, start: int, request_id: int) -> bool:
    """Whether a DEBUG-only line is logged now: a malformed message on a subscribed topic, then a ping to sync."""
    tb.sub.publish("v1/gateway/rpc", b"{not json")
    tb.sub.publish(f"v1/devices/me/rpc/request/{request_id}", {"method": "gateway_ping", "params": {}})
    response = f"v1/devices/me/rpc/response/{request_id}"
    assert tb.sub.wait_for(lambda _m: bool(tb.sub.on(response)), WAIT)
    return "ignored a malformed message on v1/gateway/rpc" in daemon.log_text()[start:]


def test_remote_logging_level_changes_the_log_level(make_daemon, mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest(), thingsboard=REMOTE_ON)
    tb = Thingsboard(mqtt_subscriber)
    tb.answer_request({})
    assert tb.reported("RemoteLoggingLevel") == "NONE"
    assert not _debug_line_after(daemon, tb, 0, 1)

    tb.send({"RemoteLoggingLevel": "DEBUG"})
    assert tb.next_status(1)["status"] == "ok"
    assert tb.reported("RemoteLoggingLevel") == "DEBUG"
    start = len(daemon.log_text())
    assert _debug_line_after(daemon, tb, start, 2)

    tb.send({"RemoteLoggingLevel": "LOUD"})
    status = tb.next_status(2)
    assert status["status"] == "error" and "LOUD" in status["errors"][0]

    tb.send({"RemoteLoggingLevel": "NONE"})  # back to gateway.yaml's logLevel (INFO)
    assert tb.next_status(3)["status"] == "ok"
    start = len(daemon.log_text())
    assert not _debug_line_after(daemon, tb, start, 3)


def test_a_change_waiting_in_thingsboard_is_applied_on_connect(make_daemon, mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest(), thingsboard=REMOTE_ON)
    tb = Thingsboard(mqtt_subscriber)
    changed = on_disk(daemon)
    changed["mapping"].append(new_mapping("/offline"))
    value = connector_change(changed)[CONNECTOR]
    value["ts"] = int(os.path.getmtime(os.path.join(daemon.workdir, "rest.json")) * 1000) + 1000
    tb.answer_request({CONNECTOR: value, "RemoteLoggingLevel": "INFO"})
    assert tb.sub.wait_for(lambda _m: any(s["attribute"] == CONNECTOR for s in tb.statuses()), WAIT)
    status = next(s for s in tb.statuses() if s["attribute"] == CONNECTOR)
    assert status["outcome"] == "applied", status
    assert post(daemon, "/offline") == 200


def test_off_by_default_nothing_is_reported_and_updates_are_ignored(make_daemon,
                                                                     mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest())
    tb = Thingsboard(mqtt_subscriber)
    original = on_disk(daemon)
    changed = copy.deepcopy(original)
    changed["mapping"].append(new_mapping("/new"))
    tb.send(connector_change(changed))
    tb.send({"RemoteLoggingLevel": "DEBUG"})
    assert not _debug_line_after(daemon, tb, 0, 1)  # the ping answer also shows the gateway is connected
    assert tb.reports() == []
    assert not [t for t, _, _ in tb.sub.messages if t.startswith(REQUEST_PREFIX)]
    assert on_disk(daemon) == original and backups(daemon) == [] and post(daemon, "/new") == 404


def test_a_local_reload_is_reported_and_a_refused_local_edit_is_not(make_daemon, mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest(), thingsboard=REMOTE_ON)
    tb = Thingsboard(mqtt_subscriber)
    tb.answer_request({})
    assert len(tb.reported(CONNECTOR)["configurationJson"]["mapping"]) == 2
    path = os.path.join(daemon.workdir, "rest.json")

    def edit_and_reload(config: dict[str, Any], outcome: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        os.kill(daemon.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while f"config reload (SIGHUP) {outcome}" not in daemon.log_text():
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.05)

    local = on_disk(daemon)
    local["mapping"].append(new_mapping("/local"))
    edit_and_reload(local, "applied")
    assert tb.sub.wait_for(lambda _m: len([b for b in tb.reports() if CONNECTOR in b]) >= 2, WAIT)
    endpoints = [m["endpoint"] for m in tb.reported(CONNECTOR)["configurationJson"]["mapping"]]
    assert endpoints == ["/data", "/tok", "/local"]

    broken = copy.deepcopy(local)
    broken["mapping"][2]["converter"]["type"] = "telepathy"
    edit_and_reload(broken, "refused")
    tb.send({"RemoteLoggingLevel": "INFO"})  # a round trip through the worker: any report would come first
    assert tb.next_status(1)["status"] == "ok"
    assert len([b for b in tb.reports() if CONNECTOR in b]) == 2
    # a remote change is compared with what runs, so ThingsBoard sending the running config is "unchanged"
    tb.send(connector_change(tb.reported(CONNECTOR)["configurationJson"]))
    assert tb.next_status(2)["outcome"] == "unchanged"
    assert backups(daemon) == [] and on_disk(daemon) == broken  # nothing written: it is what runs
    assert post(daemon, "/local") == 200


def test_each_reconnect_reports_again_and_applies_only_what_is_new(make_daemon, broker,
                                                                    mqtt_subscriber: Subscriber) -> None:
    daemon = make_daemon(rest(), thingsboard=REMOTE_ON)
    tb = Thingsboard(mqtt_subscriber)
    tb.answer_request({})
    tb.reported("general_configuration")
    tb.send({"RemoteLoggingLevel": "DEBUG"})
    assert tb.next_status(1)["attribute"] == "RemoteLoggingLevel"

    tb.sub.clear()  # before the restart: the gateway's next request must not be cleared away
    tb.sent.clear()
    broker.restart()
    changed = on_disk(daemon)
    changed["mapping"].append(new_mapping("/after-reconnect"))
    value = connector_change(changed)[CONNECTOR]
    value["ts"] = int(os.path.getmtime(os.path.join(daemon.workdir, "rest.json")) * 1000) + 1000
    tb.answer_request({"RemoteLoggingLevel": "DEBUG", CONNECTOR: value})
    assert tb.reported("general_configuration")["remoteConfiguration"] is True  # reported again
    status = tb.next_status(1)  # the level already applied is not applied (nor reported) again
    assert status["attribute"] == CONNECTOR and status["outcome"] == "applied", tb.statuses()
    assert post(daemon, "/after-reconnect") == 200
    assert _debug_line_after(daemon, tb, len(daemon.log_text()), 1)  # still DEBUG after the reconnect
    assert [s["attribute"] for s in tb.statuses()] == [CONNECTOR]
