"""What the sender uses of the MQTT connection (:class:`Session`) and of the client that owns it
(:class:`SenderHost`): the narrow interfaces that keep :mod:`sender` free of :mod:`session`'s paho
and :mod:`client`'s reconnect logic, and let tests drive it with small fakes."""
from __future__ import annotations

from typing import Any, Protocol

from gateway.northbound.publishes import DeadLetter, Publish


class Session(Protocol):
    """What the sender uses of one MQTT connection (:class:`gateway.northbound.session.MqttSession`)."""

    @property
    def lost(self) -> str | None:
        """Why the connection ended, or None while it is up."""

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue one publish and return its message id; raise SessionLost when not connected."""

    def take_acks(self) -> dict[int, int]:
        """PUBACKs received since the last call: message id → reason code (0 = success)."""

    def wait(self, timeout: float) -> None:
        """Block until a PUBACK arrives, the connection ends, something wakes it, or ``timeout`` passes."""


class SenderHost(Protocol):
    """What the sender uses of the client that owns it (:class:`gateway.northbound.client.Northbound`)."""

    def take_rpc_replies(self) -> list[Publish]:
        """Queued publishes (RPC replies, claims, own calls) to send before stored events."""

    def remember_own(self, publish: Publish) -> None:
        """Called just before ``publish`` goes out (to recognise the broker echoing it back)."""

    def dead_letter(self, letters: list[DeadLetter]) -> None:
        """Move undeliverable data aside."""

    #: monotonic time the sender last went round its loop (liveness), seconds publishes waited for the
    #: rate limits, and the publish-to-PUBACK latency histogram: written by the sender thread only
    heartbeat: float
    rate_limit_wait: float
    puback_latency: Any

    def count(self, key: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``key`` (published, acked, rejected, events_sent...)."""
