"""``hmac`` endpoint security: a signed timestamp and body, checked in constant time, replays refused.

The client sends ``X-Timestamp: <Unix seconds>`` and ``X-Signature: <HMAC(secret, timestamp + "." +
raw body)>`` (header names, algorithm and skew configurable). The signature may be hex (either case)
or base64 (standard or URL-safe, padding optional), optionally prefixed with ``<algorithm>=`` as in
``sha256=9f86...``. A request is let in when the signature matches, the timestamp is within
``maxSkewSeconds`` of the gateway's clock, and the same signature was not already accepted.

Replays: an accepted signature is remembered until its timestamp leaves the window (``timestamp +
maxSkewSeconds``); after that the timestamp check refuses it anyway. Only correctly signed requests
are remembered, so filling the cache takes the secret. The cache holds at most ``replayCacheSize``
entries; when it is full of live entries a new request is refused with 503 and ``Retry-After``
(until the oldest entry expires) rather than forgetting one: forgetting would let that request be
replayed (fail closed, docs/security.md).

Restarts: the cache lives in memory, so a new process (or a cache replaced by a reload) cannot know
what was accepted before it existed. It refuses every timestamp older than its own creation
(``not_before``): a request accepted earlier carried a timestamp no newer than the moment it was
accepted (give or take the device's clock running ahead), so its replay is refused, while a device
that re-signs its retry with the current time gets in.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import math
import re
import threading
import time
from collections.abc import Callable

from werkzeug.datastructures import Headers

from connectors.rest.model import HmacSettings, Security
from connectors.rest.security import Refusal

ALGORITHMS = ("sha256", "sha384", "sha512")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGITS = re.compile(r"[0-9]{1,12}")


class ReplayCache:
    """Signatures seen, each until its expiry time; at most ``capacity`` of them, thread-safe."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.time) -> None:
        self.capacity = max(1, capacity)
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def discard(self, key: bytes) -> None:
        """Forget ``key``; its heap entry goes when it expires, or now if stale entries pile up."""
        with self._lock:
            self._expiry.pop(key, None)
            if len(self._heap) > 2 * self.capacity:
                self._heap = [(expires, k) for k, expires in self._expiry.items()]
                heapq.heapify(self._heap)

    def add(self, key: bytes, expires: float) -> str | int:
        """"added", "seen" (a live replay) or, when full of live entries, the seconds until one expires."""
        now = self._clock()
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, old = heapq.heappop(heap)
                if self._expiry.get(old, math.inf) <= now:
                    del self._expiry[old]
            if key in self._expiry:
                return "seen"
            if len(self._expiry) >= self.capacity:
                return max(1, math.ceil(heap[0][0] - now))
            self._expiry[key] = expires
            heapq.heappush(heap, (expires, key))
            return "added"


class HmacAuthenticator:
    """Checks one ``hmac`` endpoint's signature, timestamp and replays."""

    needs_body = True

    def __init__(self, security: Security, clock: Callable[[], float] = time.time) -> None:
        settings = security.hmac or HmacSettings(secret="")
        self.settings = settings
        self._key = settings.secret.encode("utf-8")
        self._algorithm = settings.algorithm
        self._size = hashlib.new(settings.algorithm).digest_size
        self._prefix = settings.algorithm + "="
        self._clock = clock
        self.replays = ReplayCache(settings.replay_cache_size, clock)
        # nothing accepted before this moment is in ``replays``: older timestamps are refused
        self.not_before = clock()
        self._challenge = {"WWW-Authenticate": f'HMAC realm="rest-gateway", algorithm="{settings.algorithm}", '
                                               f'headers="{settings.timestamp_header} {settings.header}"'}

    def refuse(self, headers: Headers, body: bytes) -> Refusal | None:
        s = self.settings
        stamp = (headers.get(s.timestamp_header) or "").strip()
        given = headers.get(s.header)
        if not stamp or given is None:
            missing = s.timestamp_header if not stamp else s.header
            return self._refusal(f"missing {missing} header")
        if not _DIGITS.fullmatch(stamp):
            return self._refusal(f"{s.timestamp_header} is not a Unix time in whole seconds")
        expected = hmac.new(self._key, stamp.encode("ascii") + b"." + body, self._algorithm).digest()
        presented = self._decode(given)
        if not hmac.compare_digest(presented, expected):
            return self._refusal(f"{s.header} does not match the body and timestamp "
                                 f"(HMAC-{self._algorithm.upper()} of timestamp + \".\" + body, hex or base64)")
        timestamp = int(stamp)
        offset = timestamp - self._clock()
        if abs(offset) > s.max_skew_seconds:
            when = "in the future" if offset > 0 else "old"
            return self._refusal(f"{s.timestamp_header} is {abs(int(offset))} s {when}; at most "
                                 f"{s.max_skew_seconds} s of difference from the gateway's clock is accepted "
                                 "(maxSkewSeconds)")
        if timestamp < self.not_before:
            return self._refusal(f"{s.timestamp_header} is older than the gateway's start (or the reload that "
                                 "changed this endpoint's security), so a replay of a request accepted before it "
                                 "cannot be ruled out; sign the request again with the current time")
        outcome = self.replays.add(expected, timestamp + s.max_skew_seconds)
        if outcome == "seen":
            return self._refusal("replayed request: this signature was already accepted")
        if outcome != "added":
            return Refusal(503, "too many signed requests inside the replay window (replayCacheSize); retry later",
                           {"Retry-After": str(outcome)})
        return None

    def take_over(self, old: HmacAuthenticator) -> None:
        """On a reload that changed this endpoint's ``security``, keep ``old``'s replay cache when its
        entries still apply (same secret and algorithm); a longer ``maxSkewSeconds`` would outlive
        them, so then timestamps from before the reload are refused instead."""
        if (old.settings.secret, old.settings.algorithm) != (self.settings.secret, self.settings.algorithm):
            return  # nothing signed for the old cache verifies here
        self.replays = old.replays
        self.replays.capacity = max(1, self.settings.replay_cache_size)
        self.not_before = old.not_before
        if self.settings.max_skew_seconds > old.settings.max_skew_seconds:
            self.not_before = self._clock()

    def forget(self, headers: Headers, body: bytes) -> None:
        """Drop a let-in request's signature from the replay cache: it was not stored, so it may come again."""
        stamp = (headers.get(self.settings.timestamp_header) or "").strip()
        if _DIGITS.fullmatch(stamp):
            self.replays.discard(hmac.new(self._key, stamp.encode("ascii") + b"." + body, self._algorithm).digest())

    def _decode(self, value: str) -> bytes:
        """The signature's bytes from hex or base64 (``<algorithm>=`` prefix optional); never raises."""
        text = value.strip()
        if text[: len(self._prefix)].lower() == self._prefix:
            text = text[len(self._prefix):]
        if len(text) == 2 * self._size and _HEX.fullmatch(text):
            return bytes.fromhex(text)
        try:
            raw = text.encode("ascii")
            padded = raw + b"=" * (-len(raw) % 4)
            return base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return b"\x00invalid"

    def _refusal(self, message: str) -> Refusal:
        return Refusal(401, f"authentication required: {message}", self._challenge)
