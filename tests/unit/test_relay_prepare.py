"""The relay prepares each entry's request parts once: what reaches a target is what requests would send."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from connectors.rest.downlink.model import RequestOptions
from connectors.rest.downlink.relay import Relay
from tests.fixtures.http_target import HttpTarget

CASES = [
    (RequestOptions(method="POST", headers=(("Content-Type", "application/json"),)), b'{"a": 1}'),
    (RequestOptions(method="post", headers=(("X-Key", "v1"), ("accept", "text/plain"))), b"fw=1.2"),
    (RequestOptions(method="POST"), None),  # no body: Content-Length 0
    (RequestOptions(method="PUT"), b""),  # an empty body is no body
    (RequestOptions(method="GET"), None),
    (RequestOptions(method="GET", headers=(("Content-Type", "application/json"),)), b'{"get": "with body"}'),
    (RequestOptions(method="POST", username="user", password="secret"), b"x"),
    (RequestOptions(method="DELETE", headers=(("Connection", "close"),)), None),
]


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    server = HttpTarget(keep_alive=False).start()
    yield server
    server.close()


def what_requests_sends(url: str, options: RequestOptions, body: bytes | None) -> None:
    with requests.Session() as session:
        session.trust_env = False
        auth = (options.username, options.password) if options.username is not None else None
        session.request(options.method, url, data=body, headers=dict(options.headers), auth=auth, timeout=5)


@pytest.mark.parametrize(("options", "body"), CASES)
def test_the_target_receives_what_a_requests_session_would_send(target, options, body):
    relay = Relay()
    try:
        for _ in range(2):  # the second request uses the entry's parts and the URL prepared before
            assert relay.send(f"{target.url}/ok/relay/d%C3%A9v ice", options, body).kind == "ok"
    finally:
        relay.close()
    what_requests_sends(f"{target.url}/ok/session/d%C3%A9v ice", options, body)
    first, second, reference = target.wait_count("/ok/", 3)
    for sent in (first, second):
        assert sent.method == reference.method == options.method.upper()
        assert sent.path == reference.path.replace("/session/", "/relay/") == "/ok/relay/d%C3%A9v%20ice"
        assert sent.headers == reference.headers
        assert sent.body == reference.body


def test_basic_auth_reaches_the_target_and_entries_do_not_share_headers(target):
    relay = Relay()
    try:
        with_auth = RequestOptions(method="POST", username="user", password="secret", headers=(("X-A", "1"),))
        plain = RequestOptions(method="POST", headers=(("X-B", "2"),))
        assert relay.send(f"{target.url}/auth/1", with_auth, b"{}").kind == "ok"
        assert relay.send(f"{target.url}/auth/2", plain, b"{}").status == 401
        assert relay.send(f"{target.url}/auth/3", with_auth, b"{}").kind == "ok"
    finally:
        relay.close()
    first, second, third = target.wait_count("/auth/", 3)
    assert "authorization" not in second.headers and "x-a" not in second.headers and second.headers["x-b"] == "2"
    assert first.headers == third.headers and "x-b" not in third.headers


def test_dot_segments_and_redirects_as_before(target):
    relay = Relay()
    try:
        dots = RequestOptions(method="GET")
        assert relay.send(f"{target.url}/ok/%2E%2E", dots, None).ok  # not sent as a ".." segment
        follow = RequestOptions(method="GET", allow_redirects=True)
        outcome = relay.send(f"{target.url}/redirect/dev", follow, None)
        assert outcome.ok and outcome.body == b"Success"
        stay = RequestOptions(method="GET", allow_redirects=False)
        assert relay.send(f"{target.url}/redirect/x", stay, None).status == 302
    finally:
        relay.close()
    paths = [r.path for r in target.requests]
    assert paths == ["/ok/%2E%2E", "/redirect/dev", "/ok/dev", "/redirect/x"]
