"""The hmac authenticator on a controlled clock: encodings, skew, replays, and a replay cache that stays bounded."""
from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import tracemalloc

import pytest
from werkzeug.datastructures import Headers

from connectors.rest.hmac_auth import HmacAuthenticator, ReplayCache
from connectors.rest.model import HmacSettings, Security

SECRET = "unit-secret-0123456789abcdef"
NOW = 1_800_000_000


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def auth(clock: Clock, started: float = 3600, **settings) -> HmacAuthenticator:
    """An authenticator made ``started`` seconds before ``clock``'s time (a gateway running that long)."""
    now, clock.now = clock.now, clock.now - started
    checker = HmacAuthenticator(Security(type="hmac", hmac=HmacSettings(secret=SECRET, **settings)), clock)
    clock.now = now
    return checker


def headers(body: bytes, ts: int | str = NOW, algorithm: str = "sha256", encode=bytes.hex, **names: str) -> Headers:
    digest = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, algorithm).digest()
    return Headers({names.get("timestamp", "X-Timestamp"): str(ts),
                    names.get("signature", "X-Signature"): encode(digest)})


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("encode", [bytes.hex, lambda d: d.hex().upper(), lambda d: base64.b64encode(d).decode(),
                                    lambda d: base64.urlsafe_b64encode(d).decode().rstrip("=")])
def test_every_algorithm_and_encoding(algorithm, encode) -> None:
    checker = auth(Clock(), algorithm=algorithm)
    assert checker.refuse(headers(b"{}", algorithm=algorithm, encode=encode), b"{}") is None
    prefixed = headers(b"[]", algorithm=algorithm, encode=lambda d: f"{algorithm}={encode(d)}")
    assert checker.refuse(prefixed, b"[]") is None
    other = "sha512" if algorithm != "sha512" else "sha256"
    assert checker.refuse(headers(b"x", algorithm=other, encode=encode), b"x").status == 401


def test_custom_header_names() -> None:
    checker = auth(Clock(), header="Sig", timestamp_header="Sig-Time")
    assert checker.refuse(headers(b"a", signature="Sig", timestamp="Sig-Time"), b"a") is None
    assert "missing Sig-Time" in checker.refuse(headers(b"b"), b"b").message


def test_skew_window_edges() -> None:
    clock = Clock()
    checker = auth(clock, max_skew_seconds=10)
    assert checker.refuse(headers(b"1", NOW - 10), b"1") is None
    assert checker.refuse(headers(b"2", NOW + 10), b"2") is None
    assert "11 s old" in checker.refuse(headers(b"3", NOW - 11), b"3").message
    assert "in the future" in checker.refuse(headers(b"4", NOW + 11), b"4").message


def test_replay_refused_until_the_window_ends_and_forget_allows_a_resend() -> None:
    clock = Clock()
    checker = auth(clock, max_skew_seconds=60)
    sent = headers(b"data")
    assert checker.refuse(sent, b"data") is None
    assert "replayed" in checker.refuse(sent, b"data").message
    checker.forget(sent, b"data")  # it was not stored after all
    assert checker.refuse(sent, b"data") is None
    clock.now += 61  # the timestamp is out of the window: stale now, and its cache entry is gone
    assert "old" in checker.refuse(sent, b"data").message
    assert checker.refuse(headers(b"new", NOW + 61), b"new") is None
    assert len(checker.replays) == 1


def test_full_cache_refuses_with_503_instead_of_forgetting() -> None:
    clock = Clock()
    checker = auth(clock, max_skew_seconds=100, replay_cache_size=3)
    for i in range(3):
        assert checker.refuse(headers(b"%d" % i, NOW - 50), b"%d" % i) is None
    full = checker.refuse(headers(b"x"), b"x")
    assert full.status == 503 and full.headers["Retry-After"] == "50"
    assert "replayed" in checker.refuse(headers(b"0", NOW - 50), b"0").message  # nothing was forgotten
    clock.now += 50
    assert checker.refuse(headers(b"x"), b"x") is None  # the old entries expired


def test_replay_cache_memory_is_bounded_with_many_keys() -> None:
    clock = Clock()
    cache = ReplayCache(10_000, clock)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(50_000):  # five times the cap, all live
        cache.add(hashlib.sha256(b"%d" % i).digest(), NOW + 600)
    used = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(cache) == 10_000
    per_entry = used / 10_000
    assert per_entry < 400, per_entry  # ~200 bytes: 100,000 entries (the default) stay near 20 MB
    print(f"replay cache: {per_entry:.0f} bytes per entry", file=sys.stderr)
    for i in range(30_000):  # discards and re-adds never let the heap grow past twice the cap
        key = hashlib.sha256(b"%d" % i).digest()
        cache.discard(key)
        cache.add(key, NOW + 600)
    assert len(cache._heap) <= 2 * cache.capacity + 1
    clock.now = NOW + 601
    cache.add(b"fresh", NOW + 1200)
    assert len(cache) == 1 and len(cache._heap) == 1


def test_timestamps_older_than_the_start_are_refused_as_possible_replays() -> None:
    """A new process has an empty cache: what an earlier one accepted is refused by its timestamp."""
    clock = Clock()
    before = auth(clock, started=100)
    sent = headers(b"captured", NOW - 1)
    assert before.refuse(sent, b"captured") is None
    clock.now = NOW + 0.5  # restarted: the new process starts within the same second as the timestamp
    restarted = auth(clock, started=0)
    refusal = restarted.refuse(sent, b"captured")
    assert refusal.status == 401 and "older than the gateway's start" in refusal.message
    assert restarted.refuse(headers(b"same second", NOW), b"same second").status == 401  # NOW < NOW + 0.5
    assert restarted.refuse(headers(b"re-signed", NOW + 1), b"re-signed") is None
    assert len(restarted.replays) == 1


def test_a_reload_keeps_the_cache_while_the_secret_stays_and_a_longer_window_refuses_older_stamps() -> None:
    clock = Clock()
    old = auth(clock, max_skew_seconds=60)
    sent = headers(b"seen", NOW - 10)
    assert old.refuse(sent, b"seen") is None
    same_window = auth(clock, started=0, max_skew_seconds=60, replay_cache_size=7)
    same_window.take_over(old)
    assert "replayed" in same_window.refuse(sent, b"seen").message
    assert same_window.replays.capacity == 7 and same_window.not_before == old.not_before
    assert same_window.refuse(headers(b"older but fresh", NOW - 20), b"older but fresh") is None
    longer = auth(clock, started=0, max_skew_seconds=600)  # the old entries expire 60 s after their stamps
    longer.take_over(old)
    clock.now += 100  # ``sent`` left the cache, yet is inside the new window
    assert "older than the gateway's start" in longer.refuse(sent, b"seen").message
    other = HmacAuthenticator(Security(type="hmac", hmac=HmacSettings(secret="another-secret-0123456789")), clock)
    other.take_over(old)
    assert other.replays is not old.replays
