"""The admin listener end to end: a real daemon, a real broker, Prometheus text and probes read with requests."""
from __future__ import annotations

import threading
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.waiting import wait_for

REST = {"host": "127.0.0.1", "port": "0", "mapping": [{
    "endpoint": "/sensors", "HTTPMethods": ["POST"], "security": {"type": "anonymous"},
    "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                  "attributes": [], "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}]}


def scrape(daemon: Any, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) → value."""
    answer = requests.get(daemon.admin_url("/metrics"), timeout=5, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def probe(daemon: Any, path: str) -> tuple[int, dict]:
    answer = requests.get(daemon.admin_url(path), timeout=5)
    return answer.status_code, answer.json()


def test_metrics_count_what_was_posted(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(REST)
    for index in range(3):
        assert requests.post(daemon.url("/sensors"), json={"name": f"dev{index}", "temp": 20 + index},
                             timeout=5).status_code == 200
    assert requests.post(daemon.url("/sensors"), data=b'{"name": "dev0", "temp": ', timeout=5).status_code == 400
    assert requests.post(daemon.url("/sensors"), json={"temp": 5},
                         timeout=5).status_code == 400
    assert requests.get(daemon.url("/nothing/here/abc-token"), timeout=5).status_code == 404
    mqtt_subscriber.wait_for(lambda msgs: len([m for m in msgs if m[0] == "v1/gateway/telemetry"]) >= 1)

    samples = wait_for(lambda: (s := scrape(daemon)) and value(s, "rest_gateway_storage_events") == 0
                       and value(s, "rest_gateway_mqtt_pubacks_total") >= 1 and s)
    http = "rest_gateway_http_requests_total"
    labels = {"connector": "REST Connector", "endpoint": "/sensors", "method": "POST"}
    assert value(samples, http, **labels, status="200") == 3
    assert value(samples, http, **labels, status="400") == 2
    assert value(samples, http, connector="REST Connector", endpoint="(unmatched)", method="GET", status="404") == 1
    assert not any("abc-token" in str(key) or "dev0" in str(key) for key in samples)  # bounded labels
    errors = "rest_gateway_converter_errors_total"
    assert value(samples, errors, connector="REST Connector", endpoint="/sensors", reason="bad_body") == 1
    assert value(samples, errors, connector="REST Connector", endpoint="/sensors", reason="conversion") == 1
    assert value(samples, "rest_gateway_http_request_duration_seconds_count",
                 connector="REST Connector", endpoint="/sensors") == 5
    assert value(samples, "rest_gateway_storage_puts_total") == 3
    assert value(samples, "rest_gateway_storage_commits_total") >= 1
    assert value(samples, "rest_gateway_storage_commit_duration_seconds_count") >= 1
    assert value(samples, "rest_gateway_mqtt_connected") == 1
    assert value(samples, "rest_gateway_mqtt_publishes_total") >= 1
    assert value(samples, "rest_gateway_mqtt_puback_duration_seconds_count") >= 1
    assert value(samples, "rest_gateway_mqtt_puback_duration_seconds_bucket", le="+Inf") >= 1
    # the device port never serves the admin routes
    for path in ("/metrics", "/healthz", "/readyz"):
        assert requests.get(daemon.url(path), timeout=5).status_code == 404


def test_probes_follow_the_broker(make_daemon, broker) -> None:
    daemon = make_daemon(REST, general={"admin": {"readiness": {"maxBacklog": 2}}},
                         thingsboard={"minReconnectDelay": 0.2, "maxReconnectDelay": 0.5})
    assert wait_for(lambda: probe(daemon, "/readyz")[0] == 200)
    code, body = probe(daemon, "/healthz")
    assert code == 200 and body["status"] == "ok"
    assert {"mqtt_sender", "connector:REST Connector:http_server",
            "connector:REST Connector:downlink"} <= set(body["checks"])
    code, body = probe(daemon, "/readyz")
    assert body["checks"]["thingsboard"]["connected"] is True and body["checks"]["storage"]["ok"] is True

    broker.stop()
    assert wait_for(lambda: value(scrape(daemon), "rest_gateway_mqtt_connected") == 0)
    code, body = probe(daemon, "/readyz")
    assert code == 200, body  # ThingsBoard is away but the backlog (0) is within maxBacklog
    assert body["checks"]["thingsboard"]["ok"] is False and body["checks"]["backlog"]["ok"] is True
    for index in range(3):
        assert requests.post(daemon.url("/sensors"), json={"name": "d", "temp": index}, timeout=5).status_code == 200
    code, body = probe(daemon, "/readyz")
    assert code == 503 and body["status"] == "fail"
    assert body["checks"]["backlog"] == {"ok": False, "events": 3, "limit": 2}
    assert probe(daemon, "/healthz")[0] == 200  # alive: a restart would not help
    samples = scrape(daemon)
    assert value(samples, "rest_gateway_storage_events") == 3
    assert value(samples, "rest_gateway_storage_oldest_event_age_seconds") >= 0

    broker.start()
    assert wait_for(lambda: probe(daemon, "/readyz")[0] == 200, timeout=20)
    samples = wait_for(lambda: (s := scrape(daemon)) and value(s, "rest_gateway_storage_events") == 0 and s)
    assert value(samples, "rest_gateway_mqtt_connected") == 1
    assert value(samples, "rest_gateway_mqtt_reconnects_total") >= 1


def test_readyz_fails_while_storage_is_full(make_daemon, broker) -> None:
    storage = {"type": "sqlite", "data_file_path": "./data/gateway.db", "max_records_count": 3}
    daemon = make_daemon(REST, storage=storage, thingsboard={"minReconnectDelay": 0.2, "maxReconnectDelay": 0.5})
    assert wait_for(lambda: probe(daemon, "/readyz")[0] == 200)
    broker.stop()  # nothing drains: storage fills up
    assert wait_for(lambda: value(scrape(daemon), "rest_gateway_mqtt_connected") == 0)
    for index in range(2):
        assert requests.post(daemon.url("/sensors"), json={"name": "d", "temp": index}, timeout=5).status_code == 200
    code, body = probe(daemon, "/readyz")
    assert code == 200, body  # ThingsBoard is away, but storage has room and the backlog is within maxBacklog
    assert requests.post(daemon.url("/sensors"), json={"name": "d", "temp": 2}, timeout=5).status_code == 200
    code, body = probe(daemon, "/readyz")  # the last room is taken: the next put would be refused
    assert code == 503 and body["status"] == "fail", body
    refused = requests.post(daemon.url("/sensors"), json={"name": "d", "temp": 9}, timeout=5)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0

    code, body = probe(daemon, "/readyz")
    assert code == 503 and body["status"] == "fail", body
    assert body["checks"]["storage"] == {"ok": False, "events": 3,
                                         "reason": "storage is full: new data is refused (503)"}
    assert body["checks"]["backlog"]["ok"] is True  # within maxBacklog: storage alone makes it not ready
    assert probe(daemon, "/healthz")[0] == 200  # alive: a restart would not help
    samples = scrape(daemon)
    assert value(samples, "rest_gateway_storage_puts_refused_full_total") == 1
    assert value(samples, "rest_gateway_storage_puts_total") == 3
    assert value(samples, "rest_gateway_storage_events") == 3
    assert value(samples, "rest_gateway_storage_max_events") == 3
    assert value(samples, "rest_gateway_storage_bytes") > 3 * len('{"temp":0}')  # an estimate, never 0 with data
    assert value(samples, "rest_gateway_http_requests_total", connector="REST Connector", endpoint="/sensors",
                 method="POST", status="503") == 1


TOKEN_A, TOKEN_B = "poll-token-7c1e", "queue-token-2d9f"
LABELS = {"host": "127.0.0.1", "port": "0", "mapping": [{
    "endpoint": "/devices/{id}/data", "HTTPMethods": ["POST"], "security": {"type": "anonymous"},
    "converter": {"type": "json", "deviceNameExpression": "${id}", "deviceTypeExpression": "sensor",
                  "attributes": [], "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}],
    "deviceApi": {"devices": [{"accessToken": TOKEN_A, "deviceName": "Poller", "deviceType": "t"},
                              {"accessToken": TOKEN_B, "deviceName": "Sleeper", "deviceType": "t"}]}}


def test_metric_labels_stay_bounded(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(LABELS)
    assert requests.post(daemon.url("/devices/abc-123/data"), json={"temp": 1}, timeout=5).status_code == 200
    assert requests.post(daemon.url("/devices/def-456/data"), json={"temp": 2}, timeout=5).status_code == 200
    assert requests.get(daemon.url("/devices/abc-123/data"), timeout=5).status_code == 405
    assert requests.get(daemon.url("/nothing/ghi-789"), timeout=5).status_code == 404
    assert requests.request("PROPFIND", daemon.url("/devices/abc-123/data"), timeout=5).status_code == 405
    assert requests.post(daemon.url(f"/api/v1/{TOKEN_A}/telemetry"), json={"t": 1}, timeout=5).status_code == 200
    assert requests.post(daemon.url("/api/v1/wrong-token-5e5e/telemetry"), json={"t": 1},
                         timeout=5).status_code == 401

    samples = scrape(daemon)
    http, connector = "rest_gateway_http_requests_total", "REST Connector"
    # an endpoint with a path parameter counts as configured, never as the path requested
    assert value(samples, http, connector=connector, endpoint="/devices/{id}/data", method="POST", status="200") == 2
    # a 405 and a path matching nothing go to the fixed label; an unknown method to "other"
    assert value(samples, http, connector=connector, endpoint="(unmatched)", method="GET", status="405") == 1
    assert value(samples, http, connector=connector, endpoint="(unmatched)", method="GET", status="404") == 1
    assert value(samples, http, connector=connector, endpoint="(unmatched)", method="other", status="405") == 1
    # the device API's routes name the word <token>, never a token, known or not
    route = "/api/v1/<token>/telemetry"
    assert value(samples, http, connector=connector, endpoint=route, method="POST", status="200") == 1
    assert value(samples, http, connector=connector, endpoint=route, method="POST", status="401") == 1
    endpoints = {dict(labels).get("endpoint") for name, labels in samples if name == http}
    assert endpoints == {"/devices/{id}/data", "(unmatched)", route, "/health"}, endpoints  # the fixture's probe
    text = requests.get(daemon.admin_url("/metrics"), timeout=5).text
    for secret in ("abc-123", "def-456", "ghi-789", TOKEN_A, "wrong-token", "Poller", "PROPFIND"):
        assert secret not in text


def test_device_api_polls_waiting_and_rpcs_queued(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(LABELS)
    gauge = "rest_gateway_device_api_"
    labels = {"connector": "REST Connector"}
    assert value(scrape(daemon), gauge + "polls_waiting", **labels) == 0
    # an RPC for a device that is not polling waits in its mailbox
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": "Sleeper", "data": {"id": 1, "method": "wake", "params": {}}})
    # a device long-polling for its RPC holds a poll slot until one comes
    answers: list[requests.Response] = []
    poll = threading.Thread(target=lambda: answers.append(requests.get(
        daemon.url(f"/api/v1/{TOKEN_A}/rpc?timeout=20000"), timeout=30)))
    poll.start()
    try:
        samples = wait_for(lambda: (s := scrape(daemon)) and value(s, gauge + "polls_waiting", **labels) == 1
                           and value(s, gauge + "rpc_waiting_for_poll", **labels) == 1 and s)
        assert samples, scrape(daemon)
        assert value(samples, gauge + "rpc_queued_total", **labels) == 1
    finally:
        mqtt_subscriber.publish("v1/gateway/rpc", {"device": "Poller",
                                                   "data": {"id": 2, "method": "go", "params": {}}})
        poll.join(30)
    assert answers and answers[0].json() == {"id": 2, "method": "go", "params": {}}
    samples = wait_for(lambda: (s := scrape(daemon)) and value(s, gauge + "polls_waiting", **labels) == 0 and s)
    assert value(samples, gauge + "rpc_queued_total", **labels) == 2
    assert value(samples, gauge + "rpc_waiting_for_poll", **labels) == 1  # Sleeper's, still waiting
    assert value(samples, gauge + "rpc_delivered_total", **labels) == 1


def test_publishes_delayed_by_rate_limits_are_counted(make_daemon, mqtt_subscriber) -> None:
    daemon = make_daemon(REST, thingsboard={"rateLimits": {"messages": 2}})
    for index in range(4):  # a connect and a telemetry publish per device: more than 2 a second
        assert requests.post(daemon.url("/sensors"), json={"name": f"rl{index}", "temp": index},
                             timeout=5).status_code == 200
    samples = wait_for(lambda: (s := scrape(daemon)) and value(s, "rest_gateway_storage_events") == 0 and s,
                       timeout=30)
    assert samples, daemon.log_text()
    assert value(samples, "rest_gateway_mqtt_rate_limited_total") >= 1
    assert value(samples, "rest_gateway_mqtt_rate_limit_wait_seconds_total") > 0
    assert [e["values"]["temp"] for d in range(4) for e in mqtt_subscriber.telemetry_for(f"rl{d}")] == [0, 1, 2, 3]


def test_admin_basic_auth_and_errors(make_daemon) -> None:
    daemon = make_daemon(REST, general={"admin": {"security": {"username": "prom", "password": "s3cret-admin"}}})
    answer = requests.get(daemon.admin_url("/metrics"), timeout=5)
    assert answer.status_code == 401 and "authentication required" in answer.json()["error"]
    assert "Basic" in answer.headers["WWW-Authenticate"]
    assert requests.get(daemon.admin_url("/metrics"), auth=("prom", "wrong"), timeout=5).status_code == 401
    assert scrape(daemon, auth=("prom", "s3cret-admin"))
    assert probe(daemon, "/healthz")[0] == 200  # probes stay open
    answer = requests.get(daemon.admin_url("/sensors"), timeout=5)
    assert answer.status_code == 404 and answer.json()["status"] == 404  # no device route on the admin port
    answer = requests.post(daemon.admin_url("/metrics"), timeout=5)
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD"
    daemon.stop()
    assert "s3cret-admin" not in daemon.log_text()


def test_admin_port_zero_turns_it_off(make_daemon) -> None:
    daemon = make_daemon(REST, general={"admin": {"port": 0}})
    assert requests.post(daemon.url("/sensors"), json={"name": "d", "temp": 1}, timeout=5).status_code == 200
    assert "admin listener" not in daemon.log_text()


def test_json_logs_from_the_daemon(make_daemon) -> None:
    from tests.fixtures.daemon import ACCESS_TOKEN

    daemon = make_daemon(REST, general={"logging": {"format": "json"}})
    assert requests.post(daemon.url("/sensors"), json={"name": "d", "temp": 1}, timeout=5).status_code == 200
    assert daemon.stop() == 0
    import json

    lines = [json.loads(line) for line in daemon.log_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any(entry.get("connector") == "REST Connector" and "listening" in entry["message"] for entry in lines)
    assert ACCESS_TOKEN not in daemon.log_text()
