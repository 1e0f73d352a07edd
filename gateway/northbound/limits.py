"""Rate limits towards ThingsBoard: parsing "cap:seconds" specs, getSessionLimits answers, token buckets."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: share of ThingsBoard's announced limits we allow ourselves (as the reference SDK does)
TB_LIMIT_SHARE = 0.8


def parse_rate_limits(spec: str) -> list[tuple[int, float]]:
    """Parse ThingsBoard's ``"cap:seconds,cap:seconds"`` into ``[(cap, seconds), ...]``.

    Empty or blank means no limit (``[]``). Raises ValueError on anything malformed.
    """
    windows: list[tuple[int, float]] = []
    if not spec or not spec.strip():
        return windows
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        cap_text, sep, secs_text = part.partition(":")
        if not sep:
            raise ValueError(f"rate limit {part!r} is not 'cap:seconds'")
        cap, secs = int(cap_text), float(secs_text)
        if cap <= 0 or secs <= 0:
            raise ValueError(f"rate limit {part!r} needs a positive cap and period")
        windows.append((cap, secs))
    return windows


class TokenBucket:
    """One window: ``capacity`` tokens refilled evenly over ``period`` seconds.

    A cost above the capacity is admitted once the bucket is full (the bucket goes into debt),
    so an oversized request is slowed down, never blocked forever.
    """

    __slots__ = ("capacity", "period", "rate", "tokens", "stamp")

    def __init__(self, capacity: float, period: float, now: float) -> None:
        self.capacity = max(1.0, capacity)
        self.period = period
        self.rate = self.capacity / period
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` may be taken (0 = now)."""
        self._refill(now)
        need = min(cost, self.capacity)
        if self.tokens >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        """Take ``cost`` tokens (may go negative for an oversized cost)."""
        self._refill(now)
        self.tokens -= cost


def buckets_for(windows: list[tuple[int, float]], share: float, now: float) -> list[TokenBucket]:
    """Token buckets for ``windows``, each at ``share`` of its cap."""
    return [TokenBucket(cap * share, secs, now) for cap, secs in windows]


@dataclass(slots=True)
class LimitSet:
    """All windows for one kind of thing counted: messages, telemetry messages or data points."""

    buckets: list[TokenBucket] = field(default_factory=list)

    def wait_time(self, cost: float, now: float) -> float:
        return max((b.wait_time(cost, now) for b in self.buckets), default=0.0)

    def take(self, cost: float, now: float) -> None:
        for b in self.buckets:
            b.take(cost, now)

    def smallest_capacity(self) -> float | None:
        return min((b.capacity for b in self.buckets), default=None)


class RateLimiter:
    """Gateway-wide limits on messages, telemetry messages and telemetry data points.

    ``wait_time``/``take`` are pure given a clock; the sender sleeps for ``wait_time`` itself.
    """

    def __init__(self, messages: list[tuple[int, float]] | None = None,
                 telemetry_messages: list[tuple[int, float]] | None = None,
                 datapoints: list[tuple[int, float]] | None = None, share: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self.messages = LimitSet(buckets_for(messages or [], share, now))
        self.telemetry_messages = LimitSet(buckets_for(telemetry_messages or [], share, now))
        self.datapoints = LimitSet(buckets_for(datapoints or [], share, now))
        self.description = {"messages": messages or [], "telemetry_messages": telemetry_messages or [],
                            "datapoints": datapoints or [], "share": share}

    @classmethod
    def from_config(cls, messages_per_second: float, datapoints_per_second: float,
                    clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        """The configured limits (0 = none), as one-second windows."""
        msgs = [(int(messages_per_second), 1.0)] if messages_per_second > 0 else []
        dps = [(int(datapoints_per_second), 1.0)] if datapoints_per_second > 0 else []
        # sub-1/s rates: express as a longer window with cap 1
        if 0 < messages_per_second < 1:
            msgs = [(1, 1.0 / messages_per_second)]
        if 0 < datapoints_per_second < 1:
            dps = [(1, 1.0 / datapoints_per_second)]
        return cls(msgs, None, dps, 1.0, clock)

    def wait_time(self, telemetry: bool, datapoints: int) -> float:
        """Seconds to wait before one message (with ``datapoints`` telemetry points) may go."""
        now = self._clock()
        wait = self.messages.wait_time(1, now)
        if telemetry:
            wait = max(wait, self.telemetry_messages.wait_time(1, now),
                       self.datapoints.wait_time(datapoints, now))
        return wait

    def take(self, telemetry: bool, datapoints: int) -> None:
        """Account for one message sent."""
        now = self._clock()
        self.messages.take(1, now)
        if telemetry:
            self.telemetry_messages.take(1, now)
            self.datapoints.take(datapoints, now)

    def max_datapoints_per_message(self) -> int | None:
        """The largest data-point count one message should carry, or None for unlimited."""
        cap = self.datapoints.smallest_capacity()
        return None if cap is None else max(1, int(cap))


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What ThingsBoard answered to ``getSessionLimits`` (None = not said)."""

    max_payload_size: int | None = None
    max_inflight_messages: int | None = None
    messages: list[tuple[int, float]] = field(default_factory=list)
    telemetry_messages: list[tuple[int, float]] = field(default_factory=list)
    datapoints: list[tuple[int, float]] = field(default_factory=list)

    def limiter(self, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        """A limiter at 80 % of these limits."""
        return RateLimiter(self.messages, self.telemetry_messages, self.datapoints, TB_LIMIT_SHARE, clock)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return int(value)


def _tighter(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return a + b


def parse_session_limits(answer: Any) -> SessionLimits:
    """Read a ``getSessionLimits`` answer; raises ValueError if it is not one.

    ``gatewayRateLimits`` (the whole connection) are used; the per-device ``rateLimits`` are also
    applied gateway-wide, which is stricter than needed only when several devices share a message.
    Devices' per-device limits therefore never overflow, at the cost of throughput when they are
    tighter than the gateway's.
    """
    if not isinstance(answer, dict) or not ({"maxPayloadSize", "rateLimits", "gatewayRateLimits",
                                              "maxInflightMessages"} & answer.keys()):
        raise ValueError("not a getSessionLimits answer")
    gateway = answer.get("gatewayRateLimits") or {}
    device = answer.get("rateLimits") or {}
    if not isinstance(gateway, dict) or not isinstance(device, dict):
        raise ValueError("rate limits must be objects")

    def windows(key: str) -> list[tuple[int, float]]:
        return _tighter(parse_rate_limits(str(gateway.get(key) or "")),
                        parse_rate_limits(str(device.get(key) or "")))

    return SessionLimits(
        max_payload_size=_positive_int(answer.get("maxPayloadSize")),
        max_inflight_messages=_positive_int(answer.get("maxInflightMessages")),
        messages=windows("messages"),
        telemetry_messages=windows("telemetryMessages"),
        datapoints=windows("telemetryDataPoints"),
    )
