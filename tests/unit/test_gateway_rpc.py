"""Gateway RPCs and device activity in process: parsing, answers, restart scheduling, the activity clock, config."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.config.check import check_report
from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.gateway_rpc import GatewayRpc
from gateway.northbound.activity import DeviceActivity
from gateway.northbound.inbound import GatewayRpcRequest, Malformed, is_subscribed, parse_inbound
from gateway.northbound.publishes import disconnect_publish, own_rpc_reply_publish, validate_message
from gateway.uplink import ConnectorUplink
from tests.unit.test_general_config import GENERAL, write_set

WAIT = 10.0


class FakeLink:
    """The northbound side GatewayRpc uses: records answers, says replies were flushed."""

    def __init__(self) -> None:
        self.counters = {"events_sent": 7, "dead_lettered": 1, "reconnects": 2, "devices_disconnected": 3}
        self.answers: list[tuple[int, Any]] = []
        self.connected = True
        self.devices: dict[str, str | None] = {"SN-1": "REST"}

    def publish_own_rpc_reply(self, request_id: int, data: Any) -> None:
        json.dumps(data)  # what goes to ThingsBoard must be JSON
        self.answers.append((request_id, data))

    def replies_flushed(self, timeout: float) -> bool:
        return True

    def tracked_devices(self) -> dict[str, str | None]:
        return dict(self.devices)


class Counted:
    def __init__(self, produced: int) -> None:
        self.events_produced = produced


def make_rpc(restarted: threading.Event | None = None) -> tuple[GatewayRpc, FakeLink]:
    link = FakeLink()
    done = restarted or threading.Event()
    rpc = GatewayRpc(link, {"REST Connector": Counted(4), "Other": Counted(1)}, lambda: 5, done.set,
                     logging.getLogger("test"))
    return rpc, link


def ask(rpc: GatewayRpc, link: FakeLink, method: str, params: Any = None) -> Any:
    rpc.on_gateway_rpc(len(link.answers) + 1, method, params)
    return link.answers[-1][1]


def test_answers_have_the_reference_shapes() -> None:
    rpc, link = make_rpc()
    assert ask(rpc, link, "gateway_ping") == {"code": 200, "resp": "pong"}
    assert ask(rpc, link, "ping", {}) == {"code": 200, "resp": "pong"}
    assert ask(rpc, link, "gateway_devices") == {"code": 200, "resp": {"SN-1": "REST"}}
    assert ask(rpc, link, "gateway_version")["resp"]["current_version"] == __version__
    stats = ask(rpc, link, "gateway_stats")
    assert stats["eventsProduced"] == 5 and stats["eventsSent"] == 7
    assert stats["restconnectorEventsProduced"] == 4 and stats["otherEventsProduced"] == 1
    assert stats["eventsStored"] == 5 and stats["devicesDisconnected"] == 3 and stats["devices"] == 1
    assert ask(rpc, link, "gateway_stats")["eventsProduced"] == 5  # reading does not reset


def test_unknown_and_unsupported_methods_are_errors() -> None:
    rpc, link = make_rpc()
    assert ask(rpc, link, "gateway_fly") == {"error": "Method not found", "code": 404, "method": "gateway_fly"}
    assert ask(rpc, link, "rest_get")["code"] == 404
    assert ask(rpc, link, "gateway_reboot")["code"] == 501
    assert ask(rpc, link, "gateway_update")["code"] == 501


def test_a_failing_storage_does_not_break_stats() -> None:
    link = FakeLink()

    def broken() -> int:
        raise OSError("disk gone")
    rpc = GatewayRpc(link, {}, broken, lambda: None, logging.getLogger("test"))
    assert ask(rpc, link, "gateway_stats")["eventsStored"] is None


@pytest.mark.parametrize("params", ["soon", -1, 86_401, True, [1], {"delay": 1}])
def test_restart_refuses_bad_params_and_does_not_restart(params: Any) -> None:
    restarted = threading.Event()
    rpc, link = make_rpc(restarted)
    assert ask(rpc, link, "gateway_restart", params)["code"] == 400
    assert not restarted.is_set()
    # nothing was scheduled: a valid restart is still accepted (not "already scheduled")
    assert ask(rpc, link, "gateway_restart") == {"success": True}
    assert restarted.wait(WAIT)


@pytest.mark.parametrize("params", [None, {}, "", "{}", 0, 0.1])
def test_restart_answers_then_restarts_once(params: Any) -> None:
    restarted = threading.Event()
    rpc, link = make_rpc(restarted)
    assert ask(rpc, link, "gateway_restart", params) == {"success": True}
    assert restarted.wait(WAIT)
    assert ask(rpc, link, "restart")["code"] == 409  # one restart at a time


def test_gateway_rpc_requests_are_parsed_and_bad_ones_keep_their_id() -> None:
    topic = "v1/devices/me/rpc/request/42"
    assert parse_inbound(topic, b'{"method":"gateway_ping","params":{}}') == GatewayRpcRequest(42, "gateway_ping", {})
    assert parse_inbound(topic, b"nope").problem.startswith("the request is not JSON")
    assert parse_inbound(topic, b'{"params":1}').problem is not None
    assert parse_inbound(topic, b"[1]").problem is not None
    with pytest.raises(Malformed):
        parse_inbound("v1/devices/me/rpc/request/x", b"{}")
    assert is_subscribed(topic) and is_subscribed("v1/devices/me/rpc/response/1")
    assert is_subscribed("v1/gateway/rpc") and not is_subscribed("v1/gateway/telemetry")


def test_disconnect_and_own_reply_publishes() -> None:
    publish = disconnect_publish("SN-1")
    assert publish.topic == "v1/gateway/disconnect" and json.loads(publish.payload) == {"device": "SN-1"}
    with pytest.raises(ValueError):
        disconnect_publish(" ")
    with pytest.raises(ValueError):
        validate_message("v1/gateway/disconnect", {"device": "a", "type": "b"})
    reply = own_rpc_reply_publish(9, {"code": 200})
    assert reply.topic == "v1/devices/me/rpc/response/9" and json.loads(reply.payload) == {"code": 200}
    with pytest.raises(ValueError):
        own_rpc_reply_publish(9, {1, 2})
    with pytest.raises(ValueError):
        own_rpc_reply_publish(True, {})


def test_activity_clock() -> None:
    activity = DeviceActivity(max_devices=3)
    activity.posted(["a", "b"], "REST", now=100.0)
    activity.posted(["b"], "REST", now=150.0)
    assert activity.idle(["a", "b"], 60, now=200.0) == ["a"]
    assert activity.idle(["a", "b"], 60, now=250.0) == ["a", "b"]  # oldest first
    # a device with no record (sent from an older backlog) starts its clock at the check
    assert activity.idle(["c"], 60, now=250.0) == []
    assert activity.devices() == {"a": "REST", "b": "REST", "c": None}
    assert activity.idle(["c"], 60, now=310.0) == ["c"]
    assert activity.is_idle("a", 60, now=250.0) and not activity.is_idle("zz", 60, now=250.0)
    activity.forget("a")
    assert "a" not in activity.devices()
    activity.posted(["d", "e"], "X", now=400.0)  # bounded: the least recent goes first
    assert list(activity.devices()) == ["c", "d", "e"]


class RecordingShared:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.posted: list[tuple[list[str], str | None]] = []
        self.northbound = self

    def send(self, data: Any, receipt: Any = None, marks: Any = ()) -> None:
        self.sent.extend(data)

    def device_posted(self, devices: list[str], connector: str | None) -> None:
        self.posted.append((devices, connector))


def test_connector_uplink_counts_and_notes_who_posted() -> None:
    from converters.model import ConvertedData

    shared = RecordingShared()
    uplink = ConnectorUplink(shared, "REST")  # type: ignore[arg-type]
    uplink.send([ConvertedData(device_name="SN-1", device_type="t")])
    assert uplink.events_produced == 1 and shared.posted == [(["SN-1"], "REST")]


def test_checking_device_activity_config(tmp_path: Path) -> None:
    general = json.loads(json.dumps(GENERAL))
    general["thingsboard"]["checkingDeviceActivity"] = {
        "checkDeviceInactivity": True, "inactivityTimeoutSeconds": 30, "inactivityCheckPeriodSeconds": 5}
    path = write_set(tmp_path / "ok", general)
    loaded = load_config(path, env={})
    activity = loaded.gateway.thingsboard.device_activity
    assert (activity.enabled, activity.timeout, activity.check_period) == (True, 30.0, 5.0)
    assert loaded.warnings == []
    code, text = check_report(path)
    assert code == 0 and "devices silent for 30 s are disconnected" in text

    default = load_config(write_set(tmp_path / "default", GENERAL), env={}).gateway.thingsboard.device_activity
    assert not default.enabled

    general["thingsboard"]["checkingDeviceActivity"]["inactivityTimeoutSeconds"] = 0
    bad = write_set(tmp_path / "bad", general)
    with pytest.raises(ConfigError) as raised:
        load_config(bad, env={})
    problem = str(raised.value.problems[0])
    assert "gateway.yaml" in problem and "inactivityTimeoutSeconds" in problem and "seconds > 0" in problem
