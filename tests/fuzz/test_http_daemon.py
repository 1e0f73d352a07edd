"""Hostile HTTP against the real daemon process: never a 500, never dead, always a documented JSON answer."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import given

from tests.fuzz.http_inputs import (
    ENDPOINT_EXPRESSIONS,
    MAX_BODY,
    UNTERMINATED,
    deeply_nested,
    hostile_heads,
    raw_requests,
)
from tests.fuzz.support import Outcomes, assert_documented_json_error, fuzz_settings, raw_request


def fuzz_rest() -> dict[str, Any]:
    anonymous = {"type": "anonymous"}
    json_conv = {"type": "json", **ENDPOINT_EXPRESSIONS}
    return {
        "host": "127.0.0.1", "port": "0", "SSL": False, "maxBodySize": MAX_BODY, "threads": 4,
        "mapping": [
            {"endpoint": "/fuzz", "HTTPMethod": ["GET", "POST"], "security": anonymous, "converter": json_conv},
            {"endpoint": "/auth", "HTTPMethod": ["POST"], "converter": json_conv,
             "security": {"type": "basic", "username": "user", "password": "password"}},
            {"endpoint": "/dev/{id}/data", "HTTPMethod": ["POST", "PUT"], "security": anonymous,
             "converter": dict(json_conv, deviceNameExpression="dev-${id}")},
            {"endpoint": "/custom", "HTTPMethod": ["POST"], "security": anonymous,
             "converter": {"type": "custom", "extension": "CustomConverter", "deviceNameExpression": "c",
                           "deviceTypeExpression": "default", "attributes": [],
                           "timeseries": [{"type": "double", "key": "t", "value": "${temp}"}]}},
        ],
    }


@pytest.fixture
def fuzz_daemon(make_daemon):
    gw = make_daemon(fuzz_rest())
    yield gw
    alive = gw.proc.poll() is None
    log = gw.log_text()
    assert alive, f"the daemon died:\n{log[-3000:]}"
    assert gw.stop() == 0
    log = gw.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def assert_still_serving(gw) -> None:
    answer = requests.post(gw.url("/fuzz"), json={"name": "alive", "d": 1}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_generated_requests(fuzz_daemon):
    outcomes = Outcomes("HTTP requests (generated, daemon)")

    @fuzz_settings(ci_examples=250)
    @given(raw_requests())
    def one(request: tuple[bytes, bool]) -> None:
        data, complete = request
        response = raw_request(fuzz_daemon.port, data)
        outcomes.add(response.status if response is not None else "closed")
        assert_documented_json_error(response, repr(data[:300]), may_close=not complete)

    try:
        one()
    finally:
        outcomes.write()
    assert_still_serving(fuzz_daemon)


def test_hostile_framing_and_headers(fuzz_daemon):
    outcomes = Outcomes("HTTP framing and headers (fixed list, daemon)")

    @fuzz_settings(ci_examples=40, soak_examples=200)
    @given(hostile_heads)
    def one(data: bytes) -> None:
        response = raw_request(fuzz_daemon.port, data)
        outcomes.add(response.status if response is not None else "closed")
        assert_documented_json_error(response, repr(data[:200]), may_close=data in UNTERMINATED)

    try:
        one()
    finally:
        outcomes.write()
    assert_still_serving(fuzz_daemon)


@pytest.mark.parametrize("kind", ["array", "object", "value"])
def test_ten_thousand_levels_of_nesting(fuzz_daemon, kind):
    body = deeply_nested(10_000, kind)
    assert len(body) < MAX_BODY  # the parser, not the size limit, has to deal with it
    head = (b"POST /fuzz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    response = raw_request(fuzz_daemon.port, head + body)
    nesting = Outcomes(f"10,000 levels of nested JSON ({kind}, daemon)")
    nesting.add(response.status if response is not None else "closed")
    nesting.write()
    assert_documented_json_error(response, kind)
    assert response.status in (400, 413)
    assert_still_serving(fuzz_daemon)
