"""The northbound link: reads stored events, publishes them to ThingsBoard, hands downlink to a handler."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from gateway.config.model import ThingsBoardConfig
from gateway.northbound.activity import DeviceActivity
from gateway.northbound.dead_letters import DeadLetterFile
from gateway.northbound.inbound import (
    OWN_ATTRIBUTE_SUBSCRIPTIONS,
    SUBSCRIPTIONS,
    TOPIC_GATEWAY_RPC_REQUESTS,
    TOPIC_OWN_ATTRIBUTES,
    TOPIC_OWN_RPC_RESPONSE,
    AttributeResponse,
    AttributeUpdate,
    EchoFilter,
    GatewayRpcRequest,
    Malformed,
    OwnAttributesResponse,
    OwnAttributeUpdate,
    OwnRpcResponse,
    RpcRequest,
    is_subscribed,
    parse_inbound,
)
from gateway.northbound.known_devices import KnownDevices
from gateway.northbound.limits import parse_session_limits
from gateway.northbound.outage_log import OutageLog
from gateway.northbound.own_calls import OwnCalls
from gateway.northbound.own_device import GatewayRpcHandler, OwnAttributesHandler, OwnDevice
from gateway.northbound.publishes import DeadLetter, Publish, claim_publish, own_rpc_reply_publish, rpc_reply_publish
from gateway.northbound.records import encode
from gateway.northbound.sender import Sender
from gateway.northbound.session import ConnectRefused, MqttSession, SessionLost
from gateway.stats import Histogram
from gateway.storage.base import EventStorage

#: RPC replies kept while ThingsBoard is unreachable (the oldest are dropped beyond this)
MAX_PENDING_RPC_REPLIES = 1000
CONNACK_TIMEOUT = 10.0


class DownlinkHandler(Protocol):
    """Receives ThingsBoard→device traffic; called on a worker thread, never the MQTT network thread."""

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None: ...

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> None: ...


class Northbound:
    """Keeps one MQTT connection to ThingsBoard alive and drains ``storage`` into it, at least once."""

    def __init__(self, config: ThingsBoardConfig, storage: EventStorage,
                 logger: logging.Logger | None = None, dead_letter_path: str | None = None,
                 read_batch: int = 1000, linger_ms: float | None = None) -> None:
        self.config = config
        self.storage = storage
        self.log = logger or logging.getLogger("rest_gateway.northbound")
        self.dead_letter_path = dead_letter_path
        self.dead_letters = DeadLetterFile(dead_letter_path, self.log)
        if linger_ms is None:
            linger_ms = config.send_linger_ms
        self.address = f"{config.host}:{config.port}"
        self._handler: DownlinkHandler | None = None
        self.activity = DeviceActivity()  # when each device last posted (inactivity, the devices RPC)
        self._flushed = threading.Condition(threading.Lock())  # queued replies were taken by the sender
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._session: MqttSession | None = None
        self._ready = False
        self._lock = threading.Lock()
        self.known = KnownDevices()
        self._rpc_out: deque[Publish] = deque()
        self._echo = EchoFilter()
        self._own = OwnCalls(self._queue_out, self._withdraw, self._on_session_limits, self.log)
        self._me = OwnDevice(self.count, self.publish_own_rpc_reply, self.log)  # RPCs and attributes of the gateway
        # owned for the client's whole life; it sees this object only as a SenderHost
        self.sender = Sender(config, storage, self.known, self, self.log, read_batch=read_batch,
                             linger=max(float(linger_ms), 0.0) / 1000.0, activity=self.activity)
        self._attr_pool: ThreadPoolExecutor | None = None
        self._rpc_pool: ThreadPoolExecutor | None = None
        self.counters = {"published": 0, "acked": 0, "rejected": 0, "dead_lettered": 0, "reconnects": 0,
                         "connects": 0, "events_sent": 0, "storage_trims": 0, "duplicates_resent": 0,
                         "downlink_ignored": 0, "rpc_replies_dropped": 0, "rate_limited": 0,
                         "bytes_sent": 0, "received": 0,  # payload bytes published, messages received
                         "gateway_rpcs": 0, "devices_disconnected": 0}
        self.rate_limit_wait = 0.0  # seconds publishes waited for the rate limits (sender thread only)
        self.puback_latency = Histogram()  # seconds from publish to PUBACK (sender thread only)
        self.heartbeat = 0.0  # monotonic time the sender thread last went round its loop
        #: seconds without a round after which the sender counts as stalled (/healthz): its longest
        #: legitimate wait is a connect attempt plus a reconnect backoff
        self.stale_after = CONNACK_TIMEOUT + config.max_reconnect_delay + 60.0

    # ------------------------------------------------------------------ public API

    def set_downlink_handler(self, handler: DownlinkHandler) -> None:
        """Where attribute updates and RPCs go; set before :meth:`start`."""
        self._handler = handler

    def set_gateway_rpc_handler(self, handler: GatewayRpcHandler) -> None:
        """Who answers RPCs to the gateway device (``v1/devices/me/rpc/request/+``); set before :meth:`start`."""
        self._me.rpc_handler = handler

    def set_own_attributes_handler(self, handler: OwnAttributesHandler) -> None:
        """Who takes the gateway device's shared attributes (remote configuration); set before :meth:`start`.

        Only with a handler does the gateway subscribe to ``v1/devices/me/attributes``.
        """
        self._me.attributes_handler = handler

    def publish_own_attributes(self, values: dict[str, Any]) -> None:
        """Queue client attributes of the gateway device (``v1/devices/me/attributes``), sent ahead of stored data."""
        self._queue_out(Publish(TOPIC_OWN_ATTRIBUTES, encode(values)))

    def request_own_shared_attributes(self, keys: list[str], timeout: float) -> dict[str, Any] | None:
        """The gateway device's shared attributes ``keys`` (absent ones left out), or None after ``timeout`` s."""
        return self._own.request_own_shared_attributes(keys, timeout)

    def start(self) -> None:
        """Connect in the background and keep reconnecting until :meth:`stop`."""
        if self._thread is not None:
            return
        self._attr_pool = ThreadPoolExecutor(1, thread_name_prefix="rgw-attr-updates")
        self._rpc_pool = ThreadPoolExecutor(4, thread_name_prefix="rgw-rpc")
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rgw-northbound", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending, wait up to ``timeout`` for in-flight PUBACKs, disconnect and join all threads."""
        self._stop_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake_sender()
        if self._thread is not None:
            self._thread.join(timeout + CONNACK_TIMEOUT + 5)
            if self._thread.is_alive():
                self.log.error("northbound sender did not stop in time")
            self._thread = None
        for pool in (self._attr_pool, self._rpc_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._attr_pool = self._rpc_pool = None

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        """Queue a reply to a server-side RPC (sent at ``config.qos``); raises ValueError if malformed."""
        self._queue_out(rpc_reply_publish(device, request_id, data))

    def publish_own_rpc_reply(self, request_id: int, data: Any) -> None:
        """Queue the gateway device's answer to ThingsBoard's RPC ``request_id`` (on rpc/response/{id})."""
        self._queue_out(own_rpc_reply_publish(request_id, data))

    def device_posted(self, devices: list[str], connector: str | None) -> None:
        """``devices`` just had data stored through ``connector`` (their inactivity clock restarts)."""
        self.activity.posted(devices, connector)

    def tracked_devices(self) -> dict[str, str | None]:
        """Devices that posted (and were not disconnected for inactivity) → the connector they used."""
        return self.activity.devices()

    def replies_flushed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the sender has taken every queued reply; False if it has not."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self._rpc_out:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(remaining)
        return True

    def publish_claim(self, device: str, secret_key: str, duration_ms: int) -> None:
        """Queue claiming info for ``device`` on ``v1/gateway/claim`` (not stored; sent like RPC replies)."""
        self._queue_out(claim_publish(device, secret_key, duration_ms))

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        """Send the gateway's own client-side RPC and wait up to ``timeout`` s for ThingsBoard's answer.

        Raises TimeoutError (the request is withdrawn if not sent yet) or ValueError for non-JSON params.
        """
        return self._own.client_rpc(method, params, timeout)

    def request_attributes(self, device: str, client: bool, keys: list[str], timeout: float) -> dict[str, Any] | None:
        """Ask ThingsBoard for ``device``'s client (``client``) or shared attributes ``keys``; wait ``timeout`` s.

        Returns the values found (absent keys are left out), or None when no answer came in time.
        Raises ValueError for an empty device name or key list. Waiting holds only the caller's thread.
        """
        return self._own.request_attributes(device, client, keys, timeout)

    def _queue_out(self, publish: Publish) -> None:
        """Queue a publish the sender sends before stored events (bounded; the oldest is dropped)."""
        with self._lock:
            if len(self._rpc_out) >= MAX_PENDING_RPC_REPLIES:
                self._rpc_out.popleft()
                self.counters["rpc_replies_dropped"] += 1
                self.log.warning("too many RPC replies waiting for ThingsBoard; dropped the oldest")
            self._rpc_out.append(publish)
        self._wake_sender()

    def _withdraw(self, publish: Publish) -> None:
        """Take a queued publish back if the sender has not taken it yet (an own call timed out)."""
        with self._lock:
            if publish in self._rpc_out:
                self._rpc_out.remove(publish)

    def notify_stored(self) -> None:
        """Events were just stored: wake the sender if it idles waiting for PUBACKs (cheap otherwise).

        Without this, an event stored while earlier publishes await their PUBACK would wait for
        that PUBACK (a slow ThingsBoard: up to 50 ms) and then share a publish with later ones.
        """
        if self.sender.idle:
            self._wake_sender()

    def _wake_sender(self) -> None:
        """End a sender's wait at once (an RPC reply or new events wait, or stop was asked)."""
        session = self._session
        if session is not None:
            session.wake()

    @property
    def connected(self) -> bool:
        """True while a session to ThingsBoard is up (CONNACK received, not lost)."""
        session = self._session
        return self._ready and session is not None and session.lost is None

    @property
    def alive(self) -> bool:
        """The sender thread runs and went round its loop recently (longest wait: a reconnect backoff)."""
        thread = self._thread
        return (thread is not None and thread.is_alive()
                and time.monotonic() - self.heartbeat < self.stale_after)

    def stats(self) -> dict[str, Any]:
        """Counters and state for health and metrics endpoints (JSON-ready)."""
        with self._lock:
            stats: dict[str, Any] = dict(self.counters)
            stats["pending_rpc_replies"] = len(self._rpc_out)
            stats["known_devices"] = len(self.known)
        stats["tracked_devices"] = len(self.activity)
        stats["connected"] = self.connected
        stats["address"] = self.address
        sender = self.sender
        stats["max_payload_bytes"] = sender.packer.max_packet_bytes
        stats["max_inflight"] = sender.max_inflight
        stats["session_limits_received"] = sender.session_limits is not None
        return stats

    @property
    def linger(self) -> float:
        """Seconds the sender may wait, under load, for more events to share a publish (0: never)."""
        return self.sender.linger

    # ------------------------------------------------------------------ SenderHost: used by the sender

    def count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[key] += amount

    def take_rpc_replies(self) -> list[Publish]:
        with self._lock:
            replies = list(self._rpc_out)
            self._rpc_out.clear()
        if replies:
            with self._flushed:
                self._flushed.notify_all()
        return replies

    def remember_own(self, publish: Publish) -> None:
        """On MQTT 3.1.1, note publishes the broker may echo back to our subscriptions."""
        if self._session is not None and not self._session.mqtt5 and is_subscribed(publish.topic):
            self._echo.remember(publish.topic, publish.payload)

    def dead_letter(self, letters: list[DeadLetter]) -> None:
        """Move undeliverable data aside: append to the dead-letter file (or only log) and count."""
        if letters:
            self.count("dead_lettered", len(letters))
            self.dead_letters.write(letters)

    # ------------------------------------------------------------------ connection management

    def _run(self) -> None:
        delay = self.config.min_reconnect_delay
        outages = OutageLog(self.log, self.address, self.config.max_reconnect_delay)
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            session = MqttSession(self.config, self._on_message, self.log)
            try:
                session.open(CONNACK_TIMEOUT)
                self._session = session
                self._start_session(session)
            except (OSError, SessionLost, ConnectRefused) as exc:
                session.close()
                self._session = None
                outages.failed(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.max_reconnect_delay)
                continue
            delay = self.config.min_reconnect_delay
            self._ready = True
            self.count("connects")
            if outages.connected(session.mqtt5):
                self.count("reconnects")
            try:
                self.sender.run(session, self._stop, lambda: self._stop_deadline)
            finally:
                self._ready = False
                session.close()
                self._session = None
            if session.lost is not None and not self._stop.is_set():
                outages.lost(session.lost)
                self._stop.wait(delay)

    def _start_session(self, session: MqttSession) -> None:
        """Subscribe to the downlink topics and ask ThingsBoard for its limits (answer not awaited)."""
        own_attributes = list(OWN_ATTRIBUTE_SUBSCRIPTIONS) if self._me.attributes_handler is not None else []
        session.subscribe(list(SUBSCRIPTIONS) + [TOPIC_OWN_RPC_RESPONSE, TOPIC_GATEWAY_RPC_REQUESTS] + own_attributes)
        request = self._own.session_limits_request()
        self.remember_own(request)  # a plain MQTT 3.1.1 broker echoes it on v1/devices/me/rpc/request/+
        session.publish(request.topic, request.payload, qos=1)
        self._me.on_connected()

    def _on_session_limits(self, data: Any) -> None:
        """ThingsBoard answered getSessionLimits: the sender applies the limits before its next publish."""
        try:
            self.sender.pending_limits = parse_session_limits(data)
        except ValueError as exc:
            self.log.warning("ThingsBoard's getSessionLimits answer is unusable: %s", exc)

    # ------------------------------------------------------------------ downlink (network thread)

    def _on_message(self, topic: str, payload: bytes) -> None:
        session = self._session
        if session is not None and not session.mqtt5 and self._echo.is_own(topic, payload):
            self.log.debug("ignored our own publication echoed on %s", topic)
            return
        self.count("received")
        try:
            event = parse_inbound(topic, payload)
        except Malformed as exc:
            self.count("downlink_ignored")
            self.log.debug("ignored a malformed message on %s: %s", topic, exc)
            return
        if isinstance(event, (OwnRpcResponse, AttributeResponse, OwnAttributesResponse)):
            self._own.on_answer(event)
            return
        if isinstance(event, GatewayRpcRequest):
            self._me.on_gateway_rpc(event, self._rpc_pool)
            return
        if isinstance(event, OwnAttributeUpdate):
            self._me.on_shared_attributes(event.data)
            return
        handler = self._handler
        if handler is None:
            self.log.debug("no downlink handler; ignored a message on %s", topic)
            return
        try:
            if isinstance(event, AttributeUpdate) and self._attr_pool is not None:
                self._attr_pool.submit(self._call, handler.on_attribute_update, event.device, event.data)
            elif isinstance(event, RpcRequest) and self._rpc_pool is not None:
                self._rpc_pool.submit(self._call, handler.on_rpc, event.device, event.request_id,
                                      event.method, event.params)
            else:
                self.log.debug("no consumer for a message on %s", topic)
        except RuntimeError:  # pool already shut down during stop()
            self.log.debug("stopping; dropped a message on %s", topic)

    def _call(self, func: Any, *args: Any) -> None:
        try:
            func(*args)
        except Exception:
            self.log.exception("downlink handler failed for device %r", args[0] if args else None)
