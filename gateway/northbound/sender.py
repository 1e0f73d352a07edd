"""The storage→MQTT loop for one session: windowed QoS 1 publishing, PUBACK tracking, in-order removal."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.northbound.packing import DeadLetter, Publish, connect_publish
from gateway.northbound.session import RETRYABLE_REASONS, MqttSession, SessionLost
from gateway.storage.base import StoredEvent

if TYPE_CHECKING:
    from gateway.northbound.client import Northbound

#: polling step while idle or waiting (bounds RPC-reply latency and stop reaction time)
IDLE_WAIT = 0.05
REANNOUNCE_PER_ROUND = 200


class _Resend(Exception):
    """A retryable rejection: re-send everything from the first event not yet removed."""


class Sender:
    """Drains storage into one :class:`MqttSession`; returns when stopping or the session is lost.

    In-flight publishes are kept in send order; storage is trimmed only through the ``through_id`` of
    the longest fully acknowledged prefix, so an event leaves storage after all its publishes are acked.
    """

    def __init__(self, northbound: Northbound, session: MqttSession) -> None:
        self.nb = northbound
        self.session = session
        self.inflight: deque[tuple[int | None, Publish]] = deque()
        self.acked: dict[int, int] = {}
        self.waiting: set[int] = set()  # message ids of our in-flight publishes
        self.sent_at: dict[int, float] = {}  # message id -> monotonic time published (PUBACK latency)
        self.last_sent: int | None = None  # last event id published in this session
        self.announced: set[str] = set()
        self.reannounce: deque[tuple[str, str]] = deque(northbound.known.to_reannounce())
        self.retry_delay = northbound.config.min_reconnect_delay
        self.last_publish = float("-inf")  # monotonic time of the last stored-event publish (for lingering)
        self.last_batch = 0  # events in the last batch published (for lingering)

    # ---------------------------------------------------------------- main loop

    def run(self, stop: threading.Event, deadline: Callable[[], float]) -> None:
        try:
            while not stop.is_set() and self.session.lost is None:
                try:
                    self._round(stop)
                except _Resend:
                    self._resend(stop)
        except SessionLost:
            pass
        finally:
            self._finish(stop, deadline)

    def _round(self, stop: threading.Event) -> None:
        nb = self.nb
        nb.heartbeat = time.monotonic()
        nb.apply_pending_limits()
        self._settle()
        for reply in nb.take_rpc_replies():
            self._send(reply, stop, qos=nb.config.qos)
        while self.reannounce and len(self.inflight) < nb.max_inflight:
            name, device_type = self.reannounce.popleft()
            if name not in self.announced:
                self.announced.add(name)
                self._send(connect_publish(name, device_type), stop)
        # past what this session sent and awaits PUBACKs for: the in-flight window, not read_batch,
        # bounds what is outstanding
        events = nb.storage.peek_after(self.last_sent or 0, nb.read_batch)
        if not events:
            # until a PUBACK, an RPC reply or claim to send, stop, or (Northbound.notify_stored) a new
            # event: all of them wake the session. Waiting on the storage instead would leave an RPC
            # reply queued while nothing else happens for up to IDLE_WAIT (measured: p50 25 ms).
            nb.sender_idle = True
            try:
                if not nb.storage.peek_after(self.last_sent or 0, 1):  # stored before the flag was up
                    self.session.wait(IDLE_WAIT)
            finally:
                nb.sender_idle = False
            return
        linger = self._linger_time(events)
        if linger > 0:
            # until the linger ends, or earlier on a PUBACK, an RPC reply or stop (Northbound wakes
            # the session); the next round settles, sends replies first, then reads a fuller batch
            self.session.wait(linger)
            return
        result = nb.packer.pack([(e.id, e.payload) for e in events], self.announced, nb.known.remember)
        nb.dead_letter(result.dead_letters)
        if result.ready_through is not None:
            self.inflight.append((None, Publish("", b"", through_id=result.ready_through)))
        duplicates = sum(1 for e in events if e.id <= nb.max_sent_id)
        if duplicates:
            nb.count("duplicates_resent", duplicates)
        for publish in result.publishes:
            if stop.is_set():
                return  # the rest of this batch stays in storage
            self._send(publish, stop)
        self.last_sent = result.last_id
        self.last_publish = time.monotonic()
        self.last_batch = len(events)
        if result.last_id is not None:
            nb.count("events_sent", len(events))
            nb.max_sent_id = max(nb.max_sent_id, result.last_id)

    def _linger_time(self, events: list[StoredEvent]) -> float:
        """How long to wait for more events before packing ``events`` (0: publish now).

        Under load (this batch or the last one published holds several events), publishes of stored
        events are kept at least ``nb.linger`` apart while the batch would not fill a publish: many
        events then share one publish (fewer publishes, PUBACKs and trims). A lone event after a
        lone event (a quiet client) goes out at once, and so does anything when the last publish is
        older than the linger.
        """
        nb = self.nb
        if nb.linger <= 0 or len(events) >= nb.read_batch:
            return 0.0
        if len(events) < 2 and self.last_batch < 2:
            return 0.0
        wait = self.last_publish + nb.linger - time.monotonic()
        if wait <= 0:
            return 0.0
        half = nb.packer.max_packet_bytes // 2
        size = 0
        for event in events:
            size += len(event.payload)
            if size >= half:
                return 0.0
        return wait

    # ---------------------------------------------------------------- publishing

    def _send(self, publish: Publish, stop: threading.Event, qos: int = 1) -> None:
        nb = self.nb
        while len(self.inflight) >= nb.max_inflight:
            nb.heartbeat = time.monotonic()
            self._settle()
            if len(self.inflight) < nb.max_inflight:
                break
            self._check_alive()
            self.session.wait(IDLE_WAIT)
        limited_since = None
        while True:
            wait = nb.limiter.wait_time(publish.telemetry, publish.datapoints)
            if wait <= 0:
                break
            if limited_since is None:
                limited_since = time.monotonic()
                nb.count("rate_limited")
            nb.heartbeat = time.monotonic()
            self._settle()
            if stop.wait(min(wait, IDLE_WAIT)) or self.session.lost is not None:
                self._check_alive()
                if stop.is_set():
                    return
        now = time.monotonic()
        if limited_since is not None:
            nb.rate_limit_wait += now - limited_since
        nb.remember_own(publish)
        mid = self.session.publish(publish.topic, publish.payload, qos)
        nb.limiter.take(publish.telemetry, publish.datapoints)
        nb.count("published")
        if qos > 0:
            self.inflight.append((mid, publish))
            self.waiting.add(mid)
            self.sent_at[mid] = now

    def _check_alive(self) -> None:
        if self.session.lost is not None:
            raise SessionLost(self.session.lost)

    def _collect(self) -> None:
        """Take PUBACKs for our in-flight publishes only.

        Others (the getSessionLimits request, late acks of a cleared window) are dropped: kept, they
        would match a later publish once paho's message ids wrap at 65535 and trim it before its ack.
        """
        acks = self.session.take_acks()
        if not acks:
            return
        now = time.monotonic()
        latency = self.nb.puback_latency
        for mid, reason in acks.items():
            if mid in self.waiting:
                self.acked[mid] = reason
                sent = self.sent_at.pop(mid, None)
                if sent is not None:
                    latency.observe(now - sent)

    def _settle(self) -> None:
        """Consume PUBACKs: pop the acked prefix, dead-letter hopeless rejections, trim storage."""
        self._collect()
        inflight, acked = self.inflight, self.acked
        through: int | None = None
        resend = False
        dead: list[DeadLetter] = []
        while inflight:
            mid, publish = inflight[0]
            if mid is not None:
                if mid not in acked:
                    break
                reason = acked[mid]
                if reason >= 0x80:
                    self.nb.count("rejected")
                    if reason in RETRYABLE_REASONS:
                        self.nb.log.warning("ThingsBoard rejected a publish on %s with reason 0x%02X; "
                                            "will retry", publish.topic, reason)
                        resend = True
                        break
                    self.nb.log.error("ThingsBoard rejected a publish on %s with reason 0x%02X; it can "
                                      "never succeed and is moved aside", publish.topic, reason)
                    why = f"rejected by ThingsBoard: reason 0x{reason:02X}"
                    dead.append(DeadLetter(publish.first_id, why, {"topic": publish.topic,
                                            "payload": publish.payload.decode("utf-8", "replace")}))
                else:
                    self.nb.count("acked")
                    self.retry_delay = self.nb.config.min_reconnect_delay
                del acked[mid]
                self.waiting.discard(mid)
            inflight.popleft()
            if publish.through_id is not None:
                through = publish.through_id
        self.nb.dead_letter(dead)
        if through is not None:
            self.nb.storage.remove_through(through)
            self.nb.count("storage_trims")
        if resend:
            raise _Resend()

    def _resend(self, stop: threading.Event) -> None:
        """After a retryable rejection: let in-flight settle, back off, then re-send from storage's head."""
        deadline = time.monotonic() + 30
        while (self.inflight and self.session.lost is None and not stop.is_set()
               and time.monotonic() < deadline):
            self._collect()
            if all(mid is None or mid in self.acked for mid, _ in self.inflight):
                break
            self.session.wait(IDLE_WAIT)
        self.inflight.clear()
        self.acked.clear()
        self.waiting.clear()
        self.sent_at.clear()
        self.last_sent = None
        self.announced.clear()
        stop.wait(self.retry_delay)
        self.retry_delay = min(self.retry_delay * 2, self.nb.config.max_reconnect_delay)

    def _finish(self, stop: threading.Event, deadline: Callable[[], float]) -> None:
        """On stop: wait (until the deadline) for in-flight PUBACKs and trim storage for what was acked."""
        if stop.is_set():
            while self.inflight and self.session.lost is None and time.monotonic() < deadline():
                try:
                    self._settle()
                except _Resend:
                    break
                if self.inflight:
                    self.session.wait(IDLE_WAIT)
        try:
            self._settle()
        except _Resend:
            pass

