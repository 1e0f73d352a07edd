"""reportStrategy against the daemon process: what a real subscriber sees on v1/gateway/telemetry."""
from __future__ import annotations

import requests

REST = {"host": "127.0.0.1", "mapping": [{
    "endpoint": "/r", "reportStrategy": {"type": "ON_CHANGE"},
    "converter": {"type": "json", "deviceNameExpression": "${name}",
                  "timeseries": [{"type": "double", "key": "t", "value": "${t}"},
                                 {"type": "double", "key": "every", "value": "${t}",
                                  "reportStrategy": {"type": "ON_RECEIVED"}},
                                 {"type": "string", "key": "debug", "value": "${debug}",
                                  "reportStrategy": {"type": "DISABLED"}}]}}]}


def test_on_change_with_key_overrides(make_daemon, mqtt_subscriber) -> None:
    gw = make_daemon(REST)
    answers = [requests.post(gw.url("/r"), json={"name": "RS", "t": t, "debug": "x"}, timeout=10)
               for t in (1, 1, 2, 2)]
    assert [a.status_code for a in answers] == [200] * 4
    assert requests.post(gw.url("/r"), json={"name": "END", "t": 0}, timeout=10).status_code == 200
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("END"), 15)
    assert [e["values"] for e in mqtt_subscriber.telemetry_for("RS")] == [
        {"t": 1.0, "every": 1.0}, {"every": 1.0}, {"t": 2.0, "every": 2.0}, {"every": 2.0}]
