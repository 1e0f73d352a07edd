"""Refused gateway credentials on a real broker: one clear error, data kept, all delivered once the token is fixed."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.test_durability import assert_all_delivered_in_order, delivered, post_many
from tests.e2e.test_uplink import json_mapping
from tests.fixtures.broker import Broker, Subscriber

# mosquitto's password_file cannot accept a username-only login (ThingsBoard's access token), so the
# gateway logs in with ThingsBoard's "basic MQTT credentials" (usernamePassword) here
GATEWAY_USER = "gw-device-7"
RIGHT_PASSWORD = "gw-pass-right-51"
WRONG_PASSWORD = "gw-pass-wrong-92"
OBSERVER = ("tb-observer", "observer-pass-1")
CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto that knows only the gateway's real credentials and an observer."""
    instance = Broker(tmp_path, users={GATEWAY_USER: RIGHT_PASSWORD, OBSERVER[0]: OBSERVER[1]})
    if instance.kind != "mosquitto":
        pytest.skip("needs mosquitto (amqtt ignores users)")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Subscriber]:
    """A subscriber that logs in as the observer and sees what ThingsBoard would."""
    sub = Subscriber(broker)
    sub.client.username_pw_set(*OBSERVER)
    sub.start()
    try:
        yield sub
    finally:
        sub.close()


def login(password: str) -> dict:
    return {"security": {"type": "usernamePassword", "username": GATEWAY_USER, "password": password},
            "minReconnectDelay": 0.1, "maxReconnectDelay": 0.4}


def test_wrong_credentials_are_reported_once_data_is_kept_and_delivered_after_the_fix(
        make_daemon, observer: Subscriber, tmp_path: Path) -> None:
    storage = {"type": "sqlite", "data_file_path": str(tmp_path / "shared" / "gateway.db")}
    wrong = make_daemon(json_mapping(CONVERTER), storage=storage, thingsboard=login(WRONG_PASSWORD))
    acked: list = []
    post_many(wrong.url("/data"), "meter-1", 30, acked)
    assert len(acked) == 30  # ThingsBoard refusing the gateway does not stop devices posting

    deadline = time.monotonic() + 10
    while wrong.log_text().count("refused the connection") == 0:
        assert time.monotonic() < deadline, wrong.log_text()
        time.sleep(0.05)
    time.sleep(1.0)  # several more refused attempts
    health = requests.get(wrong.url("/health"), timeout=5).json()
    assert wrong.stop() == 0
    log = wrong.log_text()
    refusals = [line for line in log.splitlines() if "refused the connection" in line]
    assert len(refusals) == 1, log  # one clear line per outage, not one per attempt
    assert "ERROR" in refusals[0] and "check the gateway credentials" in refusals[0]
    assert any(cause in refusals[0].lower() for cause in ("bad user name or password", "not authorized"))
    assert WRONG_PASSWORD not in log and RIGHT_PASSWORD not in log
    assert delivered(observer) == []
    assert WRONG_PASSWORD not in str(health) and health  # /health answers while refused

    fixed = make_daemon(json_mapping(CONVERTER), storage=storage, thingsboard=login(RIGHT_PASSWORD))
    post_many(fixed.url("/data"), "meter-2", 10, acked)
    assert_all_delivered_in_order(observer, acked)  # prints acknowledged/delivered/duplicates
    assert "refused" not in fixed.log_text()
    assert fixed.stop() == 0
