"""The mapping fast path (connectors/rest/dispatch.py) answers as the Flask routes did, and only for mappings."""
from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request_started

from connectors.rest.config import rest_config_from_data
from connectors.rest.connector import RestConnector
from connectors.rest.dispatch import MappingDispatch
from gateway.config.document import Problems
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.uplink import GatewayUplink
from tests.fixtures.daemon import ROOT

EXTENSIONS = [f"{ROOT}/extensions"]
MAX_BODY = 2048
ANONYMOUS = {"type": "anonymous"}
CONVERTER = {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "thermo",
             "attributes": [{"type": "string", "key": "model", "value": "${model}"}],
             "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}
REST: dict[str, Any] = {
    "host": "127.0.0.1", "port": "5000", "maxBodySize": MAX_BODY,
    "mapping": [
        {"endpoint": "/data", "HTTPMethods": ["POST", "PUT"], "security": ANONYMOUS, "converter": CONVERTER},
        {"endpoint": "/read", "HTTPMethods": ["GET"], "security": ANONYMOUS, "converter": CONVERTER},
        {"endpoint": "/auth", "HTTPMethods": ["POST"], "converter": CONVERTER,
         "security": {"type": "basic", "username": "user", "password": "secret"}},
        {"endpoint": "/dev/{id}/data", "HTTPMethods": ["POST"], "security": ANONYMOUS,
         "converter": dict(CONVERTER, deviceNameExpression="dev-${id}")},
        {"endpoint": "/slash/", "HTTPMethods": ["POST"], "security": ANONYMOUS, "converter": CONVERTER},
        {"endpoint": "/température", "HTTPMethods": ["POST"], "security": ANONYMOUS, "converter": CONVERTER},
    ],
    "attributeRequests": [
        {"endpoint": "/attrs/{device}", "HTTPMethods": ["GET"], "type": "shared", "timeout": 1,
         "security": ANONYMOUS, "deviceNameExpression": "${device}", "attributeNameExpression": "${keys}"},
    ],
    "deviceApi": {"devices": [{"accessToken": "TOKEN1", "deviceName": "api-device", "deviceType": "boiler"}]},
}
GOOD = {"name": "SN-1", "model": "T1", "temp": 21.5}
BASIC = "Basic " + base64.b64encode(b"user:secret").decode()


class Northbound:
    """ThingsBoard is away: attribute requests get a 503, health reports no link."""

    connected = False

    def stats(self) -> dict[str, Any]:
        return {"connected": False}


class BrokenStorage(MemoryStorage):
    """A storage whose put fails with an unexpected error (a bug, not a full disk)."""

    def put(self, payloads: Any) -> None:
        raise RuntimeError("storage bug")


class Gateway:
    """A RestConnector's app on memory storage; ``flask_only`` removes the dispatcher (the old app)."""

    def __init__(self, flask_only: bool = False, storage: MemoryStorage | None = None) -> None:
        problems = Problems("rest.json")
        config = rest_config_from_data(REST, "rest.json", problems, EXTENSIONS)
        assert config is not None, problems.errors
        self.storage = storage or MemoryStorage(SizeLimits(100_000, 64 * 1024 * 1024))
        self.connector = RestConnector("t", config, GatewayUplink(self.storage, Northbound()), EXTENSIONS,
                                       logging.getLogger("tests.dispatch"))
        self.app: Flask = self.connector.app
        assert isinstance(self.app.wsgi_app, MappingDispatch)
        if flask_only:
            self.app.wsgi_app = self.app.wsgi_app.app  # type: ignore[method-assign]
        self.client = self.app.test_client()

    def close(self) -> None:
        if self.connector.device_api is not None:
            self.connector.device_api.close()


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[Gateway, Gateway]]:
    fast, flask_only = Gateway(), Gateway(flask_only=True)
    yield fast, flask_only
    fast.close()
    flask_only.close()


def answer(gateway: Gateway, method: str, path: str, **kwargs: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    response = gateway.client.open(path, method=method, **kwargs)
    return response.status_code, sorted(response.headers.items()), response.get_data()


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/data", {"json": GOOD}),
    ("PUT", "/data", {"json": [GOOD, dict(GOOD, name="SN-2")]}),
    ("POST", "/data", {"json": {"name": "SN-1", "temp": "warm"}}),  # skipped value, still 200
    ("POST", "/data", {"json": {"name": "SN-1"}}),  # nothing to store: "empty"
    ("POST", "/data", {"data": b"{not json", "content_type": "application/json"}),
    ("POST", "/data", {"json": {"temp": 1}}),  # no device name
    ("POST", "/data", {"data": b"x" * (MAX_BODY + 1), "content_type": "application/json"}),
    ("POST", "/data?name=from-query&temp=3", {"data": b""}),
    ("GET", "/data", {}),  # 405 with Allow
    ("DELETE", "/data", {}),
    ("HEAD", "/data", {}),
    ("HEAD", "/read", {"query_string": "name=x&temp=1"}),  # HEAD routed with GET by Flask: 405
    ("GET", "/read", {"query_string": "name=q&temp=1"}),
    ("POST", "/auth", {"json": GOOD}),  # 401
    ("POST", "/auth", {"json": GOOD, "headers": {"Authorization": BASIC}}),
    ("POST", "/dev/7/data", {"json": GOOD}),
    ("POST", "/dev/%C3%A9t%C3%A9/data", {"json": GOOD}),
    ("POST", "/dev//data", {"json": GOOD}),
    ("GET", "/dev/7/data", {}),
    ("POST", "/data/", {"json": GOOD}),  # strict slashes: no such endpoint
    ("POST", "/slash", {"json": GOOD}),  # redirect to /slash/
    ("POST", "/slash/", {"json": GOOD}),
    ("POST", "//data", {"json": GOOD}),
    ("POST", "/temp%C3%A9rature", {"json": GOOD}),
    ("POST", "/nowhere", {"json": GOOD}),
    ("GET", "/attrs/dev-1", {"query_string": "keys=a,b"}),  # ThingsBoard not connected: 503
    ("GET", "/attrs/dev-1", {}),  # no keys: 400
    ("GET", "/health", {}),
    ("POST", "/health", {}),
    ("POST", "/api/v1/TOKEN1/telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/WRONG/telemetry", {"json": {"temp": 1}}),
    # the device API's posts are served by the dispatcher too (segment rules): same answers as Flask's
    ("POST", "/api/v1/TOKEN1/telemetry", {"json": [{"ts": 1700000000000, "values": {"temp": 2}}]}),
    ("POST", "/api/v1/TOKEN1/telemetry", {"data": b"{not json", "content_type": "application/json"}),
    ("POST", "/api/v1/TOKEN1/telemetry", {"data": b""}),
    ("POST", "/api/v1/TOKEN1/telemetry", {"data": b"x" * (MAX_BODY + 1), "content_type": "application/json"}),
    ("POST", "/api/v1/TOKEN1/telemetry", {"json": {}}),  # nothing to store, still 200
    ("POST", "/api/v1/TOKEN1/attributes", {"json": {"fw": "1.0"}}),
    ("POST", "/api/v1/WRONG/attributes", {"json": {"fw": "1.0"}}),
    ("GET", "/api/v1/TOKEN1/attributes", {"query_string": "clientKeys=fw"}),  # Flask's; ThingsBoard away
    ("GET", "/api/v1/TOKEN1/telemetry", {}),  # 405
    ("HEAD", "/api/v1/TOKEN1/telemetry", {}),
    ("PUT", "/api/v1/TOKEN1/attributes", {"json": {"fw": "1.0"}}),
    ("POST", "/api/v1/TOKEN1/telemetry/", {"json": {"temp": 1}}),  # strict slashes: 404
    ("POST", "/api/v1//telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/a/b/telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/a%2Fb/telemetry", {"json": {"temp": 1}}),
    ("POST", "//api/v1/TOKEN1/telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/t%C3%A9/telemetry", {"json": {"temp": 1}}),  # a UTF-8 token, unknown: 401
    ("POST", "/api/v1/provision/telemetry", {"json": {"temp": 1}}),
    ("POST", "/api/v1/provision", {"json": {}}),
    ("POST", "/api/v1/TOKEN1/attributes/updates", {"json": {}}),
    ("POST", "/api/v1/TOKEN1/rpc/7", {"json": {"result": 1}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), CASES, ids=[f"{m} {p}" for m, p, _ in CASES])
def test_same_answer_as_flask(gateways, method, path, kwargs):
    fast, flask_only = gateways
    assert answer(fast, method, path, **kwargs) == answer(flask_only, method, path, **kwargs)


def test_answers_are_the_documented_ones(gateways):
    fast, _ = gateways
    before = fast.storage.count()
    ok = fast.client.post("/data", json=GOOD)
    assert (ok.status_code, ok.get_json(), ok.mimetype) == (200, {"stored": 1}, "application/json")
    assert fast.storage.count() == before + 1
    record = json.loads(fast.storage.peek(before + 1)[before].payload)
    assert record["device"] == "SN-1" and record["attributes"] == {"model": "T1"}
    assert fast.client.post("/dev/42/data", json=GOOD).status_code == 200
    assert json.loads(fast.storage.peek(before + 2)[before + 1].payload)["device"] == "dev-42"

    wrong = fast.client.get("/data")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST, PUT"
    assert wrong.get_json() == {"error": "method GET is not allowed on /data", "status": 405}
    big = fast.client.post("/data", data=b"x" * (MAX_BODY + 1), content_type="application/json")
    assert big.status_code == 413
    assert big.get_json()["error"] == f"request body is larger than the limit of {MAX_BODY} bytes (maxBodySize)"
    assert fast.client.post("/auth", json=GOOD).headers["WWW-Authenticate"].startswith("Basic ")
    assert fast.client.post("/data/", json=GOOD).get_json()["error"] == "no endpoint at /data/"
    head = fast.client.head("/data")
    assert head.status_code == 405 and head.get_data() == b""


def test_only_the_mappings_bypass_flask(gateways):
    fast, _ = gateways
    flask_requests: list[str] = []

    def seen(sender: Flask, **extra: Any) -> None:
        from flask import request
        flask_requests.append(request.path)

    request_started.connect(seen, fast.app)
    try:
        assert fast.client.post("/data", json=GOOD).status_code == 200
        assert fast.client.post("/dev/1/data", json=GOOD).status_code == 200
        assert fast.client.get("/attrs/d", query_string="keys=a").status_code == 503
        assert fast.client.post("/temp%C3%A9rature", json=GOOD).status_code == 200
        assert fast.client.post("/slash/", json=GOOD).status_code == 200
        assert flask_requests == []  # served by the dispatcher
        assert fast.client.post("/api/v1/TOKEN1/telemetry", json={"t": 1}).status_code == 200
        assert fast.client.post("/api/v1/TOKEN1/attributes", json={"a": 1}).status_code == 200
        assert fast.client.post("/api/v1/WRONG/telemetry", json={"t": 1}).status_code == 401
        assert flask_requests == []  # served by the dispatcher
        assert fast.client.get("/health").status_code == 200
        assert fast.client.get("/api/v1/TOKEN1/attributes", query_string="clientKeys=a").status_code == 503
        assert fast.client.get("/data").status_code == 405
        assert fast.client.post("/nowhere").status_code == 404
    finally:
        request_started.disconnect(seen, fast.app)
    assert flask_requests == ["/health", "/api/v1/TOKEN1/attributes", "/data", "/nowhere"]


def test_device_api_posts_store_the_same_events(gateways):
    fast, flask_only = gateways
    records = []
    for gateway in (fast, flask_only):
        before = gateway.storage.count()
        assert gateway.client.post("/api/v1/TOKEN1/telemetry",
                                   json={"ts": 1700000000000, "values": {"temp": 3}}).status_code == 200
        assert gateway.client.post("/api/v1/TOKEN1/attributes", json={"fw": "2"}).status_code == 200
        records.append([event.payload for event in gateway.storage.peek(before + 2)[before:]])
    assert records[0] == records[1]
    assert json.loads(records[0][0])["device"] == "api-device"
    dispatch = fast.app.wsgi_app
    assert isinstance(dispatch, MappingDispatch)
    assert len(dispatch._segments) == 2  # recognised by prefix and suffix, checked against the URL map


def test_empty_answers_keep_their_headers():
    """The device API's bodiless answers skip werkzeug's header fix-ups: the headers stay the same."""
    from flask import Response

    from connectors.rest.responses import empty_response

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "SERVER_NAME": "x", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "HTTP_HOST": "x"}
    for status in (200, 401, 408):
        answers = []
        for response in (Response(b"", status=status), empty_response(status)):
            seen: list[Any] = []
            body = b"".join(response(dict(environ), lambda *args, into=seen: into.extend(args[:2])))
            answers.append((seen[0], sorted(seen[1]), body))
        assert answers[0] == answers[1]


def test_unexpected_error_is_a_logged_500(caplog):
    gateways = [Gateway(storage=BrokenStorage(SizeLimits(10, 10**6))),
                Gateway(flask_only=True, storage=BrokenStorage(SizeLimits(10, 10**6)))]
    try:
        answers = []
        for gateway in gateways:
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="tests.dispatch"):
                answers.append(answer(gateway, "POST", "/dev/3/data", json=GOOD))
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert [r.getMessage() for r in errors] == ["unexpected error on POST /dev/3/data"]
            assert errors[0].exc_info is not None and "storage bug" in str(errors[0].exc_info[1])
        assert answers[0] == answers[1]
        assert answers[0][0] == 500
        assert json.loads(answers[0][2]) == {"error": "internal error; see the gateway log", "status": 500}
    finally:
        for gateway in gateways:
            gateway.close()


def test_storage_full_is_503_with_retry_after():
    gateway = Gateway(storage=MemoryStorage(SizeLimits(1, 10**6)))
    try:
        assert gateway.client.post("/data", json=GOOD).status_code == 200
        full = gateway.client.post("/data", json=GOOD)
        assert full.status_code == 503 and full.headers["Retry-After"] == "5"
        assert full.get_json()["error"].startswith("data not accepted: storage is full")
    finally:
        gateway.close()

