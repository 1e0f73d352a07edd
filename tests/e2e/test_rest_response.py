"""The reference's ``response`` section against the daemon process: configured bodies, and
``responseExpected`` answered by a stand-in rule chain (a real MQTT client on the real broker) that
sets the response attribute on the device, per device, without blocking other requests."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

CONVERTER = {"type": "json", "deviceNameExpression": "${name}",
             "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]}
REST = {"host": "127.0.0.1", "maxWaitingResponses": 3, "mapping": [
    {"endpoint": "/json_ok", "converter": CONVERTER,
     "response": {"successResponse": {"ok": True, "n": [1, 2]}, "unsuccessfulResponse": {"ok": False}}},
    {"endpoint": "/text_ok", "converter": CONVERTER,
     "security": {"type": "basic", "username": "u", "password": "p"},
     "response": {"successResponse": "OK", "unsuccessfulResponse": "Error"}},
    {"endpoint": "/plain", "converter": CONVERTER},
    {"endpoint": "/ask", "converter": CONVERTER,
     "response": {"responseExpected": True, "responseAttribute": "reply", "timeout": 20,
                  "unsuccessfulResponse": "no answer"}},
    {"endpoint": "/ask_short", "converter": CONVERTER,
     "response": {"responseExpected": True, "responseAttribute": "reply", "timeout": 1}},
    {"endpoint": "/ask_quiet", "converter": CONVERTER, "reportStrategy": {"type": "ON_CHANGE"},
     "response": {"responseExpected": True, "responseAttribute": "reply", "timeout": 0.5,
                  "unsuccessfulResponse": {"answer": None}}},
]}


@pytest.fixture
def gateway(make_daemon):
    return make_daemon(REST)


def test_configured_bodies_are_sent_as_json_or_text(gateway, mqtt_subscriber) -> None:
    answer = requests.post(gateway.url("/json_ok"), json={"name": "J1", "t": 1}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.content == b'{"ok":true,"n":[1,2]}'  # JSON, not the reference's Python repr
    bad = requests.post(gateway.url("/json_ok"), data=b"{not json", timeout=10)
    assert (bad.status_code, bad.json()) == (400, {"ok": False})

    answer = requests.post(gateway.url("/text_ok"), json={"name": "T1", "t": 2}, auth=("u", "p"), timeout=10)
    assert (answer.status_code, answer.text) == (200, "OK")
    assert answer.headers["Content-Type"].startswith("text/plain")
    denied = requests.post(gateway.url("/text_ok"), json={"name": "T1", "t": 2}, auth=("u", "x"), timeout=10)
    assert (denied.status_code, denied.text) == (401, "Error") and "Basic" in denied.headers["WWW-Authenticate"]

    plain = requests.post(gateway.url("/plain"), json={"name": "P1", "t": 3}, timeout=10)
    assert (plain.status_code, plain.json()) == (200, {"stored": 1})  # no response section: our default
    assert mqtt_subscriber.wait_for(lambda _m: all(mqtt_subscriber.telemetry_for(d) for d in ("J1", "T1", "P1")), 15)
    assert [e["values"] for e in mqtt_subscriber.telemetry_for("T1")] == [{"t": 2.0}]


def rule_chain(subscriber, silent: set[str], hold: threading.Event, stop: threading.Event) -> threading.Thread:
    """Play a ThingsBoard rule chain: for each uplink with ``responseExpected: true``, set the shared
    attribute ``reply`` on that device (``{"for": device, "seq": n}``); devices in ``silent`` get nothing,
    and ``hold`` delays every answer until it is set."""
    def run() -> None:
        answered = 0
        while not stop.is_set():
            def asked(messages, answered=answered) -> bool:
                return len(_asks(messages)) > answered
            if not subscriber.wait_for(asked, 0.5) or not hold.wait(0.5):
                continue
            with subscriber._cond:
                pending = _asks(subscriber.messages)[answered:]
            for seq, device in enumerate(pending, start=answered):
                if device not in silent:
                    subscriber.publish("v1/gateway/attributes",
                                       {"device": device, "data": {"reply": {"for": device, "seq": seq}}})
            answered += len(pending)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _asks(messages) -> list[str]:
    return [device for topic, body, _ in messages if topic == "v1/gateway/attributes" and isinstance(body, dict)
            for device, attrs in body.items() if isinstance(attrs, dict) and attrs.get("responseExpected") is True]


def test_response_expected_is_answered_per_device_without_blocking(gateway, mqtt_subscriber) -> None:
    hold, stop = threading.Event(), threading.Event()
    helper = rule_chain(mqtt_subscriber, {"S1", "S2"}, hold, stop)
    try:
        with ThreadPoolExecutor(4) as pool:
            waiting = {d: pool.submit(requests.post, gateway.url("/ask"), json={"name": d, "t": 1}, timeout=30)
                       for d in ("A", "B")}
            assert mqtt_subscriber.wait_for(lambda m: sorted(_asks(m)) == ["A", "B"], 15)
            # both wait (the rule chain holds its answers); other requests are served meanwhile
            other = requests.post(gateway.url("/plain"), json={"name": "P2", "t": 5}, timeout=10)
            assert other.status_code == 200 and not any(f.done() for f in waiting.values())
            # the bound: 2 wait now, a third may, a fourth is refused before anything is stored
            third = pool.submit(requests.post, gateway.url("/ask_short"), json={"name": "S1", "t": 1}, timeout=30)
            assert mqtt_subscriber.wait_for(lambda m: "S1" in _asks(m), 15)
            refused = requests.post(gateway.url("/ask"), json={"name": "S2", "t": 1}, timeout=10)
            assert (refused.status_code, refused.text) == (503, "no answer")  # its unsuccessfulResponse
            assert refused.headers["Retry-After"] == "1"
            hold.set()
            answers = {d: f.result() for d, f in waiting.items()}
            late = third.result()
    finally:
        stop.set()
        helper.join(5)
    for device, answer in answers.items():
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
        assert answer.json()["for"] == device  # never another device's value
    assert late.status_code == 408 and late.json()["stored"] == 1  # no unsuccessfulResponse: our JSON error
    assert "'reply'" in late.json()["error"] and "'S1'" in late.json()["error"]
    # the uplink carried the reference's extra attribute, for the waiting device only
    assert mqtt_subscriber.attributes_for("A") == {"responseExpected": True}
    assert "S2" not in _asks(mqtt_subscriber.messages)  # the refused request stored nothing
    assert not mqtt_subscriber.telemetry_for("S2")
    health = requests.get(gateway.url("/health"), timeout=10).json()
    assert health["status"] == "ok"


def test_response_expected_timeout_sends_unsuccessful_response(gateway, mqtt_subscriber) -> None:
    answer = requests.post(gateway.url("/ask_quiet"), json={"name": "Q", "t": 1}, timeout=10)
    assert (answer.status_code, answer.json()) == (408, {"answer": None})
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("Q"), 15)  # stored all the same
    # an answer after the timeout reaches nobody, and a later request of Q is not handed that stale value
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": "Q", "data": {"reply": "stale"}})
    again = requests.post(gateway.url("/ask_quiet"), json={"name": "Q", "t": 2}, timeout=10)
    assert again.status_code == 408
    # with reportStrategy ON_CHANGE an unchanged value is left out, never the rule chain's cue
    assert requests.post(gateway.url("/ask_quiet"), json={"name": "Q", "t": 2}, timeout=10).status_code == 408
    assert mqtt_subscriber.wait_for(lambda m: _asks(m).count("Q") == 3, 15)
    assert [entry["values"] for entry in mqtt_subscriber.telemetry_for("Q")] == [{"t": 1.0}, {"t": 2.0}]
    waits = requests.get(gateway.url("/health"), timeout=10).json()
    assert gateway.proc.poll() is None and waits["status"] == "ok"
