"""The storage→MQTT loop: windowed QoS 1 publishing, PUBACK tracking, in-order removal.

The sender knows its MQTT connection only through :class:`Session` and the client that owns it
only through :class:`SenderHost` (both small Protocols, in :mod:`sender_ports`), so it can be read
and tested alone. One
:class:`Sender` lives as long as its client; :meth:`Sender.run` drains storage into one session.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from gateway.config.model import ThingsBoardConfig
from gateway.northbound.activity import DeviceActivity
from gateway.northbound.known_devices import KnownDevices
from gateway.northbound.limits import RateLimiter, SessionLimits
from gateway.northbound.packing import Packer
from gateway.northbound.publishes import DeadLetter, Publish, connect_publish, disconnect_publish
from gateway.northbound.sender_ports import SenderHost, Session
from gateway.northbound.session import RETRYABLE_REASONS, SessionLost
from gateway.storage.base import EventStorage, StoredEvent

#: polling step while idle or waiting (bounds RPC-reply latency and stop reaction time)
IDLE_WAIT = 0.05
REANNOUNCE_PER_ROUND = 200
DEFAULT_MAX_INFLIGHT = 100


class _Resend(Exception):
    """A retryable rejection: re-send everything from the first event not yet removed."""


class Sender:
    """Drains storage into a :class:`Session`; :meth:`run` returns when stopping or the session is lost.

    In-flight publishes are kept in send order; storage is trimmed only through the ``through_id`` of
    the longest fully acknowledged prefix, so an event leaves storage after all its publishes are acked.
    Packing, rate limits and the in-flight window outlive sessions (ThingsBoard's session limits apply
    from their answer on); the window itself, announcements and the read position are per session.
    """

    def __init__(self, config: ThingsBoardConfig, storage: EventStorage, known: KnownDevices, host: SenderHost,
                 logger: logging.Logger, read_batch: int = 1000, linger: float = 0.0,
                 activity: DeviceActivity | None = None) -> None:
        """``activity``: when devices last posted; with ``config.device_activity.enabled`` silent ones
        are disconnected (``v1/gateway/disconnect``) and connected again by their next message."""
        self.config = config
        self.activity = activity if activity is not None else DeviceActivity()
        self.inactivity = config.device_activity if config.device_activity.enabled else None
        self.storage = storage
        self.known = known
        self.log = logger
        self.read_batch = read_batch
        self.linger = linger  # seconds; 0 = publish at once
        self._take_rpc_replies = host.take_rpc_replies
        self._remember_own = host.remember_own
        self._dead_letter = host.dead_letter
        self._count = host.count
        self._host = host  # also keeps the sender's health and latency figures (heartbeat, PUBACK latency)
        self.limiter = RateLimiter.from_config(config.rate_limits.messages_per_second,
                                               config.rate_limits.datapoints_per_second)
        self.packer = Packer(config.max_payload_bytes, self.limiter.max_datapoints_per_message())
        self.max_inflight = DEFAULT_MAX_INFLIGHT
        self.pending_limits: SessionLimits | None = None  # set by any thread, applied between rounds
        self.session_limits: SessionLimits | None = None
        self.idle = False  # waits for PUBACKs with nothing new to send (the client then wakes the session)
        self.max_sent_id = 0  # highest event id ever published (to count re-sent duplicates)
        self.session: Session  # set by run()
        self._reset_window()

    def _reset_window(self) -> None:
        """The per-session state of a new session: nothing in flight or announced, read from storage's head."""
        self.inflight: deque[tuple[int | None, Publish]] = deque()
        self.acked: dict[int, int] = {}
        self.waiting: set[int] = set()  # message ids of our in-flight publishes
        self.sent_at: dict[int, float] = {}  # message id -> monotonic time published (PUBACK latency)
        self.last_sent: int | None = None  # last event id published in this session
        self.announced: set[str] = set()
        self.reannounce: deque[tuple[str, str]] = deque()
        self.retry_delay = self.config.min_reconnect_delay
        self.last_publish = float("-inf")  # monotonic time of the last stored-event publish (for lingering)
        self.last_batch = 0  # events in the last batch published (for lingering)
        self.next_idle_check = time.monotonic()  # when silent devices are looked for next

    def apply_pending_limits(self) -> None:
        """Switch to ThingsBoard's limits (80 % of them) once its getSessionLimits answer arrived."""
        limits, self.pending_limits = self.pending_limits, None
        if limits is None:
            return
        self.session_limits = limits
        self.limiter = limits.limiter()
        max_payload = self.config.max_payload_bytes
        if limits.max_payload_size:
            max_payload = min(max_payload, limits.max_payload_size)
        self.packer = Packer(max_payload, self.limiter.max_datapoints_per_message())
        self.max_inflight = limits.max_inflight_messages or DEFAULT_MAX_INFLIGHT
        self.log.info("ThingsBoard session limits applied: max payload %d bytes, max in flight %d, "
                      "rate limits %s", max_payload, self.max_inflight, self.limiter.description)

    # ---------------------------------------------------------------- main loop

    def run(self, session: Session, stop: threading.Event, deadline: Callable[[], float]) -> None:
        """Drain storage into ``session`` until ``stop`` is set or the session is lost.

        On stop, in-flight PUBACKs are awaited until ``deadline()`` (a monotonic time).
        """
        self.session = session
        self._reset_window()
        self.reannounce.extend(self._still_active(self.known.to_reannounce()))
        try:
            while not stop.is_set() and session.lost is None:
                try:
                    self._round(stop)
                except _Resend:
                    self._resend(stop)
        except SessionLost:
            pass
        finally:
            self._finish(stop, deadline)

    def _round(self, stop: threading.Event) -> None:
        self._host.heartbeat = time.monotonic()
        self.apply_pending_limits()
        self._settle()
        for reply in self._take_rpc_replies():
            self._send(reply, stop, qos=self.config.qos)
        if self.inactivity is not None:
            self._disconnect_idle(stop)
        while self.reannounce and len(self.inflight) < self.max_inflight:
            name, device_type = self.reannounce.popleft()
            if name not in self.announced:
                self.announced.add(name)
                self._send(connect_publish(name, device_type), stop)
        # past what this session sent and awaits PUBACKs for: the in-flight window, not read_batch,
        # bounds what is outstanding
        events = self.storage.peek_after(self.last_sent or 0, self.read_batch)
        if not events:
            # until a PUBACK, an RPC reply or claim to send, stop, or (the host's notify_stored) a new
            # event: all of them wake the session. Waiting on the storage instead would leave an RPC
            # reply queued while nothing else happens for up to IDLE_WAIT (measured: p50 25 ms).
            self.idle = True
            try:
                if not self.storage.peek_after(self.last_sent or 0, 1):  # stored before the flag was up
                    self.session.wait(IDLE_WAIT)
            finally:
                self.idle = False
            return
        linger = self._linger_time(events)
        if linger > 0:
            # until the linger ends, or earlier on a PUBACK, an RPC reply or stop (Northbound wakes
            # the session); the next round settles, sends replies first, then reads a fuller batch
            self.session.wait(linger)
            return
        result = self.packer.pack([(e.id, e.payload) for e in events], self.announced, self.known.remember)
        self._dead_letter(result.dead_letters)
        if result.ready_through is not None:
            self.inflight.append((None, Publish("", b"", through_id=result.ready_through)))
        duplicates = sum(1 for e in events if e.id <= self.max_sent_id)
        if duplicates:
            self._count("duplicates_resent", duplicates)
        for publish in result.publishes:
            if stop.is_set():
                return  # the rest of this batch stays in storage
            self._send(publish, stop)
        self.last_sent = result.last_id
        self.last_publish = time.monotonic()
        self.last_batch = len(events)
        if result.last_id is not None:
            self._count("events_sent", len(events))

    def _linger_time(self, events: list[StoredEvent]) -> float:
        """How long to wait for more events before packing ``events`` (0: publish now).

        Under load (this batch or the last one published holds several events), publishes of stored
        events are kept at least ``linger`` apart while the batch would not fill a publish: many
        events then share one publish (fewer publishes, PUBACKs and trims). A lone event after a
        lone event (a quiet client) goes out at once, and so does anything when the last publish is
        older than the linger.
        """
        if self.linger <= 0 or len(events) >= self.read_batch:
            return 0.0
        if len(events) < 2 and self.last_batch < 2:
            return 0.0
        wait = self.last_publish + self.linger - time.monotonic()
        if wait <= 0:
            return 0.0
        half = self.packer.max_packet_bytes // 2
        size = 0
        for event in events:
            size += len(event.payload)
            if size >= half:
                return 0.0
        return wait

    # ---------------------------------------------------------------- publishing

    def _still_active(self, devices: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of the devices to re-announce after a reconnect, those not silent past the inactivity timeout."""
        if self.inactivity is None:
            return devices
        timeout = self.inactivity.timeout
        active = []
        for name, device_type in devices:
            if self.activity.is_idle(name, timeout):
                self.known.forget(name)
                self.activity.forget(name)
            else:
                active.append((name, device_type))
        return active

    def _disconnect_idle(self, stop: threading.Event) -> None:
        """Every check period: disconnect the connected devices silent for the inactivity timeout.

        Their next message is packed after a fresh ``v1/gateway/connect`` (they leave ``announced``).
        """
        assert self.inactivity is not None
        now = time.monotonic()
        if now < self.next_idle_check:
            return
        self.next_idle_check = now + self.inactivity.check_period
        for name in self.activity.idle(self.announced, self.inactivity.timeout, now):
            if stop.is_set():
                return
            self.announced.discard(name)
            self.known.forget(name)
            self.activity.forget(name)
            self._send(disconnect_publish(name), stop)
            self._count("devices_disconnected")
            self.log.info("device %s disconnected from ThingsBoard: no data for %g s or more "
                          "(checkingDeviceActivity); its next message connects it again",
                          name, self.inactivity.timeout)

    def _send(self, publish: Publish, stop: threading.Event, qos: int = 1) -> None:
        while len(self.inflight) >= self.max_inflight:
            self._host.heartbeat = time.monotonic()
            self._settle()
            if len(self.inflight) < self.max_inflight:
                break
            self._check_alive()
            self.session.wait(IDLE_WAIT)
        limited_since = None
        while True:
            wait = self.limiter.wait_time(publish.telemetry, publish.datapoints)
            if wait <= 0:
                break
            if limited_since is None:
                limited_since = time.monotonic()
                self._count("rate_limited")
            self._host.heartbeat = time.monotonic()
            self._settle()
            if stop.wait(min(wait, IDLE_WAIT)) or self.session.lost is not None:
                self._check_alive()
                if stop.is_set():
                    return
        now = time.monotonic()
        if limited_since is not None:
            self._host.rate_limit_wait += now - limited_since
        self._remember_own(publish)
        mid = self.session.publish(publish.topic, publish.payload, qos)
        self.limiter.take(publish.telemetry, publish.datapoints)
        self._count("published")
        self._count("bytes_sent", len(publish.payload))
        if publish.through_id is not None and publish.through_id > self.max_sent_id:
            self.max_sent_id = publish.through_id  # handed to paho: a later read of it is a re-send
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
        latency = self._host.puback_latency
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
                    self._count("rejected")
                    if reason in RETRYABLE_REASONS:
                        self.log.warning("ThingsBoard rejected a publish on %s with reason 0x%02X; "
                                            "will retry", publish.topic, reason)
                        resend = True
                        break
                    self.log.error("ThingsBoard rejected a publish on %s with reason 0x%02X; it can "
                                      "never succeed and is moved aside", publish.topic, reason)
                    why = f"rejected by ThingsBoard: reason 0x{reason:02X}"
                    dead.append(DeadLetter(publish.first_id, why, {"topic": publish.topic,
                                            "payload": publish.payload.decode("utf-8", "replace")}))
                else:
                    self._count("acked")
                    self.retry_delay = self.config.min_reconnect_delay
                del acked[mid]
                self.waiting.discard(mid)
            inflight.popleft()
            if publish.through_id is not None:
                through = publish.through_id
        self._dead_letter(dead)
        if through is not None:
            self.storage.remove_through(through)
            self._count("storage_trims")
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
        self.retry_delay = min(self.retry_delay * 2, self.config.max_reconnect_delay)

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

