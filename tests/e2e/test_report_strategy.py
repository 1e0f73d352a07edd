"""reportStrategy against the daemon process: what a real subscriber sees on v1/gateway/telemetry,
including across a SIGKILL and restart (the state lives in the sqlite storage with the events)."""
from __future__ import annotations

import time
from typing import Any

import requests

from tests.e2e.test_reload import sighup, wait_outcome, write_rest

REST = {"host": "127.0.0.1", "mapping": [{
    "endpoint": "/r", "reportStrategy": {"type": "ON_CHANGE"},
    "converter": {"type": "json", "deviceNameExpression": "${name}",
                  "timeseries": [{"type": "double", "key": "t", "value": "${t}"},
                                 {"type": "double", "key": "every", "value": "${t}",
                                  "reportStrategy": {"type": "ON_RECEIVED"}},
                                 {"type": "string", "key": "debug", "value": "${debug}",
                                  "reportStrategy": {"type": "DISABLED"}}]}}]}


def post(gw: Any, path: str, **body: Any) -> None:
    answer = requests.post(gw.url(path), json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def reported(subscriber: Any, device: str, end: str = "END") -> list[dict[str, Any]]:
    """The values reported for ``device`` once ``end`` (posted last) arrived; an event delivered
    twice (the same ts: at-least-once after a kill) counts once, it is not a second report."""
    assert subscriber.wait_for(lambda _m: subscriber.telemetry_for(end), 20)
    seen: list[tuple[int, dict[str, Any]]] = []
    for entry in subscriber.telemetry_for(device):
        if (entry["ts"], entry["values"]) not in seen:
            seen.append((entry["ts"], entry["values"]))
    return [values for _, values in seen]


def test_on_change_with_key_overrides(make_daemon, mqtt_subscriber) -> None:
    gw = make_daemon(REST)
    for t in (1, 1, 2, 2):
        post(gw, "/r", name="RS", t=t, debug="x")
    post(gw, "/r", name="END", t=0)
    assert reported(mqtt_subscriber, "RS") == [
        {"t": 1.0, "every": 1.0}, {"every": 1.0}, {"t": 2.0, "every": 2.0}, {"every": 2.0}]


def test_on_change_and_report_period_survive_a_sigkill(make_daemon, mqtt_subscriber) -> None:
    rest = {"host": "127.0.0.1", "mapping": [{
        "endpoint": "/r", "reportStrategy": {"type": "ON_CHANGE"},
        "converter": {"type": "json", "deviceNameExpression": "${name}",
                      "attributes": [{"type": "string", "key": "fw", "value": "${fw}"}],
                      "timeseries": [{"type": "double", "key": "t", "value": "${t}"},
                                     {"type": "double", "key": "slow", "value": "${t}",
                                      "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 600000}}]}}]}
    gw = make_daemon(rest)
    post(gw, "/r", name="K", t=1, fw="1.0")
    gw.kill()  # the 200 came once the value and its state were committed, together
    gw.start()
    post(gw, "/r", name="K", t=1, fw="1.0")  # unchanged: not reported again; slow: within its period
    post(gw, "/r", name="K", t=2, fw="1.0")  # changed: reported once
    post(gw, "/r", name="K", t=2, fw="1.1")
    post(gw, "/r", name="END", t=0)
    assert reported(mqtt_subscriber, "K") == [{"t": 1.0, "slow": 1.0}, {"t": 2.0}]
    fw = [body["K"]["fw"] for body in mqtt_subscriber.on("v1/gateway/attributes")
          if isinstance(body, dict) and "fw" in body.get("K", {})]
    # attributes carry no ts to tell a redelivered event (at-least-once after the kill) from a report:
    # 1.0 may repeat only before 1.1, which is reported once, last
    assert fw[-1] == "1.1" and fw.count("1.1") == 1 and set(fw) == {"1.0", "1.1"}


def test_report_periods_against_the_daemon(make_daemon, mqtt_subscriber) -> None:
    rest = {"host": "127.0.0.1", "mapping": [{
        "endpoint": "/p", "reportStrategy": {"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 600000},
        "converter": {"type": "json", "deviceNameExpression": "${name}",
                      "timeseries": [{"type": "double", "key": "v", "value": "${v}"},
                                     {"type": "double", "key": "fast", "value": "${v}",
                                      "reportStrategy": {"type": "ON_CHANGE_OR_REPORT_PERIOD",
                                                         "reportPeriod": 200}},
                                     {"type": "double", "key": "tick", "value": "${v}",
                                      "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 200}}]}}]}
    gw = make_daemon(rest)
    post(gw, "/p", name="P", v=5)  # first of everything: reported
    post(gw, "/p", name="P", v=6)  # changed: v and fast at once; tick only once its period passed
    time.sleep(0.5)  # longer than the short periods (a lower bound: never too short on a slow box)
    post(gw, "/p", name="P", v=6)  # unchanged: v within its long period; fast and tick due again
    post(gw, "/p", name="END", v=0)
    values = reported(mqtt_subscriber, "P")
    assert values[0] == {"v": 5.0, "fast": 5.0, "tick": 5.0}
    assert values[1] in ({"v": 6.0, "fast": 6.0}, {"v": 6.0, "fast": 6.0, "tick": 6.0})  # tick: if 200 ms passed
    assert values[2:] == [{"fast": 6.0, "tick": 6.0}]


def test_gateway_and_connector_level_strategies(make_daemon, mqtt_subscriber) -> None:
    """Precedence: data point > mapping > connector (rest.json top level) > gateway (gateway.yaml)."""
    mapping = {"converter": {"type": "json", "deviceNameExpression": "${name}",
                             "timeseries": [{"type": "double", "key": "t", "value": "${t}"},
                                            {"type": "double", "key": "all", "value": "${t}",
                                             "reportStrategy": {"type": "ON_RECEIVED"}}]}}
    rest = {"host": "127.0.0.1", "reportStrategy": {"type": "ON_CHANGE"},
            "mapping": [{"endpoint": "/a", **mapping},
                        {"endpoint": "/b", "reportStrategy": {"type": "ON_RECEIVED"}, **mapping}]}
    gw = make_daemon(rest, thingsboard={"reportStrategy": {"type": "DISABLED"}})
    for path in ("/a", "/b"):
        for t in (1, 1):
            post(gw, path, name=f"G{path[1].upper()}", t=t)
    post(gw, "/b", name="END", t=0)
    assert reported(mqtt_subscriber, "GA") == [{"t": 1.0, "all": 1.0}, {"all": 1.0}]  # connector wins
    assert reported(mqtt_subscriber, "GB") == [{"t": 1.0, "all": 1.0}, {"t": 1.0, "all": 1.0}]  # mapping
    gw.stop()  # one gateway device at a time on the broker
    gateway_only = make_daemon({"host": "127.0.0.1", "mapping": [{"endpoint": "/a", **mapping}]},
                               thingsboard={"reportStrategy": {"type": "ON_CHANGE"}})
    for t in (1, 1):
        post(gateway_only, "/a", name="GG", t=t)
    post(gateway_only, "/a", name="END2", t=0)
    assert reported(mqtt_subscriber, "GG", "END2") == [{"t": 1.0, "all": 1.0}, {"all": 1.0}]  # the gateway's


def test_a_reload_applies_the_connector_level_strategy_and_keeps_the_state(make_daemon, mqtt_subscriber) -> None:
    converter = {"type": "json", "deviceNameExpression": "${name}",
                 "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]}
    before = {"server": {"host": "127.0.0.1"},
              "mapping": [{"endpoint": "/r", "reportStrategy": {"type": "ON_CHANGE"}, "converter": converter}]}
    gw = make_daemon(before)
    post(gw, "/r", name="L", t=1)
    write_rest(gw, {"server": {"host": "127.0.0.1"},
                    "reportStrategy": {"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 600000},
                    "mapping": [{"endpoint": "/r", "converter": converter}]})
    sighup(gw)
    wait_outcome(gw, "applied", 1)
    post(gw, "/r", name="L", t=1)  # the new strategy read the last value sent from the storage
    post(gw, "/r", name="L", t=2)
    post(gw, "/r", name="END", t=0)
    assert reported(mqtt_subscriber, "L") == [{"t": 1.0}, {"t": 2.0}]


def test_values_sent_as_received_make_the_stored_state_stale(make_daemon, mqtt_subscriber) -> None:
    """ON_CHANGE, then ON_RECEIVED (which records nothing), then ON_CHANGE again: the value the state
    held from the first period is a change again, since ThingsBoard got another one meanwhile."""
    converter = {"type": "json", "deviceNameExpression": "${name}",
                 "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]}

    def rest(strategy: str) -> dict[str, Any]:
        return {"server": {"host": "127.0.0.1"}, "reportStrategy": {"type": strategy},
                "mapping": [{"endpoint": "/r", "converter": converter}]}

    gw = make_daemon(rest("ON_CHANGE"))
    post(gw, "/r", name="S", t=1)
    for applied, strategy in enumerate(("ON_RECEIVED", "ON_CHANGE"), start=1):
        write_rest(gw, rest(strategy))
        sighup(gw)
        wait_outcome(gw, "applied", applied)
        post(gw, "/r", name="S", t=2 if strategy == "ON_RECEIVED" else 1)
    post(gw, "/r", name="END", t=0)
    assert reported(mqtt_subscriber, "S") == [{"t": 1.0}, {"t": 2.0}, {"t": 1.0}]
