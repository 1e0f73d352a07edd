"""A reload keeps the device API's state: mailboxes, waiting long polls, and a device API change needs a restart."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.integration.test_device_api_http import DEVICE, MAPPING, TOKEN, gateways

make_gateway = pytest.fixture(name="make_gateway")(gateways)


def _wait(predicate: Callable[[], Any], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _rewrite(gw: Any, change: Callable[[dict[str, Any]], None]) -> None:
    path = gw.folder / "rest.json"
    rest = json.loads(path.read_text(encoding="utf-8"))
    change(rest)
    path.write_text(json.dumps(rest), encoding="utf-8")


def test_mailboxes_and_waiting_polls_survive_a_reload(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"kept": 1}})
    assert _wait(lambda: gw.health()["attribute_updates_kept"] == 1)
    polled: list[requests.Response] = []
    poll = threading.Thread(target=lambda: polled.append(
        requests.get(gw.url(f"/{TOKEN}/rpc?timeout=20000"), timeout=30)))
    poll.start()
    assert _wait(lambda: gw.health()["polls_waiting"] == 1)
    api = gw.daemon.connectors[0].device_api

    _rewrite(gw, lambda rest: rest["mapping"].append(dict(MAPPING, endpoint="/y")))
    assert gw.daemon.reload("test").outcome == "applied"

    assert gw.daemon.connectors[0].device_api is api
    assert gw.health()["polls_waiting"] == 1  # the poll started before the reload still waits
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": 7, "method": "reboot"}})
    poll.join(30)
    assert polled[0].status_code == 200 and polled[0].json()["id"] == 7
    kept = requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=1000"), timeout=5)
    assert kept.status_code == 200 and kept.json() == {"kept": 1}
    answer = requests.post(f"http://127.0.0.1:{gw.port}/y", json={"n": "dev"}, timeout=5)
    assert answer.status_code == 200, answer.text


def test_a_device_api_change_needs_a_restart(make_gateway) -> None:
    gw = make_gateway()
    _rewrite(gw, lambda rest: rest["deviceApi"]["devices"].append(
        {"accessToken": "B2_TOKEN", "deviceName": "Device B"}))
    result = gw.daemon.reload("test")
    assert result.outcome == "restart_required"
    assert any("deviceApi" in change for change in result.problems), result.problems
    assert requests.post(gw.url("/B2_TOKEN/telemetry"), json={"t": 1}, timeout=5).status_code == 401
