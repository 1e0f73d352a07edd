"""trustedProxies: which X-Forwarded-For hop is the client, and that untrusted peers cannot name one."""
from __future__ import annotations

from typing import Any

import pytest

from connectors.rest.forwarded import ForwardedClientAddress, TrustedProxies, parse_address, read_trusted_proxies
from gateway.config.document import Problems

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(("peer", "header", "client"), [
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),                      # one proxy
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),            # two trusted proxies in a row
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),             # the client's own entry is not believed
    ("127.0.0.1", "10.0.0.5, 10.0.0.6", "10.0.0.5"),                  # every hop trusted: the leftmost
    ("127.0.0.1", "garbage, 203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "203.0.113.7, unknown", "127.0.0.1"),               # a hop we cannot read stops the walk
    ("127.0.0.1", "203.0.113.7:4711", "203.0.113.7"),
    ("127.0.0.1", "[2001:db8::1]:80", "2001:db8::1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ("192.0.2.1", "203.0.113.7", "192.0.2.1"),                        # the peer is no trusted proxy
    ("::ffff:10.0.0.1", "203.0.113.7", "203.0.113.7"),                # IPv4-mapped peer
    ("fd00::1", "203.0.113.7", "203.0.113.7"),
])
def test_client_is_the_rightmost_untrusted_hop(peer: str, header: str, client: str) -> None:
    assert PROXIES.client(peer, header) == client


def test_parse_address() -> None:
    assert str(parse_address(" 1.2.3.4 ")) == "1.2.3.4"
    assert parse_address("unknown") is None and parse_address("") is None and parse_address("[::1") is None


def run(environ: dict[str, Any]) -> tuple[dict[str, Any], ForwardedClientAddress]:
    seen: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(env)
        return [b""]

    middleware = ForwardedClientAddress(app, PROXIES)
    middleware(environ, lambda *a: None)
    return seen, middleware


def test_middleware_sets_remote_addr_only_for_trusted_peers_and_drops_spoofed_headers() -> None:
    seen, middleware = run({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"})
    assert seen["REMOTE_ADDR"] == "203.0.113.7" and middleware.snapshot() == {"forwarded": 1, "untrusted_header": 0}
    seen, middleware = run({"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7",
                            "HTTP_X_FORWARDED_PROTO": "https", "HTTP_FORWARDED": "for=1.1.1.1"})
    assert seen["REMOTE_ADDR"] == "192.0.2.1"
    assert not {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED"} & set(seen)
    assert middleware.snapshot() == {"forwarded": 0, "untrusted_header": 1}
    seen, middleware = run({"REMOTE_ADDR": "192.0.2.1"})
    assert seen["REMOTE_ADDR"] == "192.0.2.1" and middleware.snapshot() == {"forwarded": 0, "untrusted_header": 0}


def test_config_reading_names_the_bad_entry() -> None:
    problems = Problems("rest.json")
    assert read_trusted_proxies(["127.0.0.1", "10.1.0.0/16", "10.1.0.0/16", "::1"], "/trustedProxies",
                                problems) == ("127.0.0.1/32", "10.1.0.0/16", "::1/128")
    assert not problems.errors
    read_trusted_proxies(["127.0.0.1", "10.0.0.300", "proxy.example"], "/trustedProxies", problems)
    assert [p.pointer for p in problems.errors] == ["/trustedProxies/1", "/trustedProxies/2"]
    assert "CIDR" in problems.errors[0].expected
