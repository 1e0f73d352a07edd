"""Rate-limit parsing, getSessionLimits answers and token-bucket throttling (with a fake clock)."""
from __future__ import annotations

import pytest

from gateway.northbound.limits import RateLimiter, parse_rate_limits, parse_session_limits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_parse_rate_limits() -> None:
    assert parse_rate_limits("20:1,600:60") == [(20, 1.0), (600, 60.0)]
    assert parse_rate_limits(" 10:1 , ") == [(10, 1.0)]
    assert parse_rate_limits("") == []
    for bad in ("20", "a:1", "0:1", "5:0", "5:-1"):
        with pytest.raises(ValueError):
            parse_rate_limits(bad)


def test_session_limits_answer() -> None:
    limits = parse_session_limits({"maxPayloadSize": 32768, "maxInflightMessages": 50,
                                   "rateLimits": {"messages": "10:1"},
                                   "gatewayRateLimits": {"messages": "20:1,600:60", "telemetryMessages": "",
                                                         "telemetryDataPoints": "100:1"}})
    assert limits.max_payload_size == 32768 and limits.max_inflight_messages == 50
    assert limits.messages == [(20, 1.0), (600, 60.0), (10, 1.0)]
    assert limits.datapoints == [(100, 1.0)]
    assert limits.limiter().max_datapoints_per_message() == 80  # 80 % of 100
    with pytest.raises(ValueError):
        parse_session_limits({"unrelated": 1})
    with pytest.raises(ValueError):
        parse_session_limits([1])
    assert parse_session_limits({"maxPayloadSize": "big"}).max_payload_size is None


def test_throttles_to_80_percent_of_the_window() -> None:
    clock = Clock()
    limiter = parse_session_limits({"gatewayRateLimits": {"messages": "10:1"}}).limiter(clock)
    sent = 0
    while limiter.wait_time(False, 0) == 0:
        limiter.take(False, 0)
        sent += 1
    assert sent == 8
    wait = limiter.wait_time(False, 0)
    assert wait == pytest.approx(1 / 8)
    clock.now += wait
    assert limiter.wait_time(False, 0) == 0


def test_long_window_limits_bursts_over_time() -> None:
    clock = Clock()
    limiter = RateLimiter(messages=[(100, 1.0), (120, 60.0)], clock=clock)
    sent = 0
    for _ in range(600):  # one attempt every 0.1 s for a minute
        while limiter.wait_time(False, 0) == 0:
            limiter.take(False, 0)
            sent += 1
        clock.now += 0.1
    assert 120 <= sent <= 120 + 60 * 2 + 1  # the 60 s window, refilled at 2/s


def test_datapoints_counted_only_for_telemetry_and_oversized_cost_not_blocked_forever() -> None:
    clock = Clock()
    limiter = RateLimiter(datapoints=[(10, 1.0)], clock=clock)
    assert limiter.wait_time(False, 1000) == 0
    assert limiter.wait_time(True, 50) == 0  # full bucket admits a big message once
    limiter.take(True, 50)
    assert limiter.wait_time(True, 1) == pytest.approx(4.1)  # pays back the debt first
    clock.now += 4.2
    assert limiter.wait_time(True, 1) == 0


def test_configured_limits() -> None:
    clock = Clock()
    limiter = RateLimiter.from_config(2, 0, clock)
    limiter.take(False, 0)
    limiter.take(False, 0)
    assert limiter.wait_time(False, 0) == pytest.approx(0.5)
    assert RateLimiter.from_config(0, 0).wait_time(True, 10**6) == 0
    slow = RateLimiter.from_config(0.5, 0, clock)
    slow.take(False, 0)
    assert slow.wait_time(False, 0) == pytest.approx(2.0)
