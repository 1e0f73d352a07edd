"""Shared fuzz helpers: hypothesis profiles (CI vs ``RGW_SOAK=1``), a raw HTTP client, outcome figures."""
from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("RGW_SOAK", "") not in ("", "0")
# Where outcome counts go for bench/reliability_table.py (unset: counts are not written anywhere).
FIGURES_FILE = os.environ.get("RGW_FIGURES_FILE", "")

# Statuses the REST connector documents (connectors/rest/README.md "Answers", docs/security.md).
DOCUMENTED_STATUSES = frozenset({200, 400, 401, 404, 405, 413, 431, 501, 503})


def fuzz_settings(ci_examples: int, soak_examples: int | None = None, **extra: Any) -> settings:
    """Hypothesis settings: ``ci_examples`` by default, ``soak_examples`` (default 20x) with RGW_SOAK=1.

    No example database is kept (the checkout stays clean), no per-example deadline (the target is
    a real process on a shared CI machine), and function-scoped fixtures are allowed because the
    daemon they start is meant to outlive every example.
    """
    examples = (soak_examples or ci_examples * 20) if SOAK else ci_examples
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.large_base_example],
        **extra,
    )


@dataclass(slots=True)
class RawResponse:
    """One HTTP response as read from the socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    head_only: bool = False  # the answer to HEAD: headers, no body

    def json(self) -> Any:
        return json.loads(self.body)


_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


def raw_request(port: int, data: bytes, timeout: float = 15.0) -> RawResponse | None:
    """Send ``data`` as it is and read one response; None when the server closed without answering.

    The request should ask for ``Connection: close`` (or be malformed enough that the server closes);
    the response is read until the peer closes or its Content-Length is complete.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read everything
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            parsed = _parse(bytes(received), head=data.startswith(b"HEAD "))
            if parsed is not None:
                return parsed
    return _parse(bytes(received), final=True, head=data.startswith(b"HEAD "))


def _parse(data: bytes, final: bool = False, head: bool = False) -> RawResponse | None:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        if final and data:
            raise AssertionError(f"not an HTTP response: {data[:200]!r}")
        return None
    match = _STATUS_LINE.match(data)
    if match is None:
        raise AssertionError(f"not an HTTP status line: {data[:200]!r}")
    if match.group(1).startswith(b"1"):  # an interim answer (100 Continue): the real one follows
        return _parse(data[head_end + 4:], final, head)
    headers: dict[str, str] = {}
    for line in data[match.end():head_end].split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = data[head_end + 4:]
    if head:  # the answer to HEAD has headers only
        return RawResponse(int(match.group(1)), headers, b"", head_only=True)
    length = headers.get("content-length")
    if length is not None and len(body) < int(length):
        if final:
            raise AssertionError(f"response body cut short: {len(body)} of {length} bytes")
        return None
    if length is None and not final:
        return None
    return RawResponse(int(match.group(1)), headers, body if length is None else body[:int(length)])


def assert_documented_json_error(response: RawResponse | None, what: str, may_close: bool = False) -> None:
    """Every answer is a documented status; every error carries ``{"error": str, "status": N}``.

    ``may_close``: the request was incomplete, so closing without an answer is acceptable.
    """
    if response is None and may_close:
        return
    assert response is not None, f"{what}: the server closed the connection without an answer"
    assert response.status in DOCUMENTED_STATUSES, f"{what}: status {response.status}: {response.body[:300]!r}"
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{what}: {response.status} with Content-Type {response.headers.get('content-type')!r}: "
        f"{response.body[:300]!r}")
    if response.head_only:
        return
    body = json.loads(response.body)
    if response.status >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (what, body)
        assert body.get("status") == response.status, (what, body)


class Outcomes:
    """Counts answers by status for one fuzz target and writes them to ``RGW_FIGURES_FILE`` at the end."""

    _lock = threading.Lock()

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: Counter[str] = Counter()

    def add(self, outcome: int | str) -> None:
        self.counts[str(outcome)] += 1

    def write(self) -> None:
        if not FIGURES_FILE or not self.counts:
            return
        line = json.dumps({"kind": "fuzz", "target": self.target, "outcomes": dict(self.counts)})
        with self._lock, open(FIGURES_FILE, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
