"""The client address behind a trusted reverse proxy (rest.json ``trustedProxies``), from ``X-Forwarded-For``.

Only a request whose TCP peer (after the TLS front's own address hand-over, see client_address.py)
is inside one of the configured networks may name the client. ``X-Forwarded-For`` is read from the
right: each proxy appends the address it received the request from, so the rightmost entries are
written by proxies we trust and the first entry, walking leftwards, whose writer we do *not* trust
is the client. Entries further left were written by the client itself and are never believed.
An entry that is not an IP address stops the walk (the last trusted hop is the answer). From any
other peer the forwarding headers are removed before the app sees them, so a spoofed header
changes nothing. The winner goes into ``REMOTE_ADDR``: rate limits ``by: client``, logs and the
status page all read it there.
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from waitress.proxy_headers import PROXY_HEADERS, clear_untrusted_headers

from gateway.config.document import Problems
from gateway.config.locate import join

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def read_trusted_proxies(value: Any, pointer: str, problems: Problems) -> tuple[str, ...]:
    """The normalised networks of ``trustedProxies`` (``"10.0.0.0/8"``, ``"::1/128"``); problems for bad entries."""
    if value is None:
        return ()
    if not isinstance(value, list):
        return ()  # the schema has reported it
    networks: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            continue  # the schema has reported it
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            problems.error(join(pointer, index), f"{entry!r} is not an IP address or network",
                           "an address such as \"127.0.0.1\" or a CIDR network such as \"10.0.0.0/8\"")
    return tuple(dict.fromkeys(networks))


class TrustedProxies:
    """Which peers may name the client, and the client a forwarding header names."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: Address | None) -> bool:
        """``address`` is inside a configured network (an IPv4-mapped IPv6 address counts as its IPv4)."""
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks if network.version == address.version)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client address: the rightmost hop of ``forwarded_for`` not written by a trusted proxy."""
        current = peer
        if not self.trusts(parse_address(peer)):
            return peer
        for entry in reversed(forwarded_for.split(",")):
            address = parse_address(entry)
            if address is None:
                break  # garbage or "unknown": nothing left of it can be believed
            current = str(address)
            if not self.trusts(address):
                break
        return current


def parse_address(text: str) -> Address | None:
    """An IP address from one ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text, closed, _ = text[1:].partition("]")
        if not closed:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ForwardedClientAddress:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the forwarded client for peers in ``trustedProxies``.

    Counts, for the metrics, requests whose address came from a trusted proxy's header
    (``forwarded``) and requests whose forwarding header was ignored because the peer is not trusted
    (``untrusted_header``).
    """

    def __init__(self, app: WsgiApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        self._lock = threading.Lock()
        self.counts = {"forwarded": 0, "untrusted_header": 0}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR") or ""
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        outcome = ""
        if self.proxies.trusts(parse_address(peer)):
            if forwarded_for:
                environ["REMOTE_ADDR"] = self.proxies.client(peer, forwarded_for)
                outcome = "forwarded"
        elif any(f"HTTP_{name}" in environ for name in PROXY_HEADERS):
            outcome = "untrusted_header"
        # what waitress does with its own clear_untrusted_proxy_headers, which has to be off here
        # (it would remove X-Forwarded-For before this middleware sees it)
        clear_untrusted_headers(environ, PROXY_HEADERS if outcome != "forwarded" else
                                PROXY_HEADERS - {"X_FORWARDED_FOR"})
        if outcome:
            with self._lock:
                self.counts[outcome] += 1
        return self.app(environ, start_response)

    def snapshot(self) -> dict[str, int]:
        """Copies of the counters."""
        with self._lock:
            return dict(self.counts)
