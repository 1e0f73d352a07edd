"""One MQTT connection to ThingsBoard: a thin paho-mqtt 2.x wrapper (connect, publish, PUBACKs, receive)."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config.model import ThingsBoardConfig

#: PUBACK reason codes worth retrying (unspecified, server busy/unavailable, quota exceeded)
RETRYABLE_REASONS = frozenset({0x80, 0x88, 0x89, 0x97})


class SessionLost(Exception):
    """The connection is gone (publish refused by paho, or the broker went away)."""


class ConnectRefused(Exception):
    """ThingsBoard answered CONNACK with a failure (bad credentials, not authorized, busy...)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def describe_refusal(code: int, text: str) -> str:
    """A sentence an operator can act on for a CONNACK failure code (MQTT 5 or 3.1.1)."""
    hints = {4: "bad username or password", 5: "not authorized", 0x86: "bad username or password",
             0x87: "not authorized", 0x85: "client id not valid", 2: "client id rejected",
             3: "server unavailable", 0x88: "server unavailable", 0x89: "server busy",
             0x9F: "connection rate exceeded"}
    hint = hints.get(code)
    if hint and hint not in text.lower():
        return f"{text} ({hint})"
    return text


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY: a publish (an RPC reply, a small batch) leaves at once, not after the peer's delayed ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (e.g. a proxy wrapper): keep the default
        pass


class MqttSession:
    """A single connection; after it is lost a new session is made (no paho auto-reconnect).

    ``on_message(topic, payload)`` runs on paho's network thread and must be quick.
    PUBACKs are collected and handed out by :meth:`take_acks` (mid → reason code value).
    """

    def __init__(self, config: ThingsBoardConfig, on_message: Callable[[str, bytes], None],
                 logger: logging.Logger) -> None:
        self.config = config
        self.mqtt5 = config.protocol != "mqtt311"
        self._on_message_cb = on_message
        self._log = logger
        self._cond = threading.Condition()
        self._acks: dict[int, int] = {}
        self._connack: tuple[int, str] | None = None
        self._lost: str | None = None
        self._started = False
        self._woken = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id or "",
                             protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
                             clean_session=None if self.mqtt5 else True, reconnect_on_failure=False)
        username = config.access_token or config.username
        if username:
            client.username_pw_set(username, config.password or None)
        if config.tls is not None:
            tls = config.tls
            client.tls_set(ca_certs=tls.ca_cert or None, certfile=tls.cert or None,
                           keyfile=tls.private_key or None, cert_reqs=ssl.CERT_REQUIRED)
            if tls.insecure:
                client.tls_insecure_set(True)
        client.max_inflight_messages_set(0)  # the sender keeps its own window
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = _no_delay
        self.client = client

    # ----------------------------------------------------------- paho callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self._connack = (int(reason.value), str(reason))
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            if self._lost is None:
                self._lost = str(reason)
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acks[mid] = int(getattr(reason, "value", 0) or 0)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message_cb(message.topic, message.payload)
        except Exception:  # never let a bad message stop the network loop
            self._log.exception("error handling a message on %s", message.topic)

    # ----------------------------------------------------------- sender thread API

    def open(self, timeout: float) -> None:
        """Connect and wait for a successful CONNACK; raises OSError, ConnectRefused or SessionLost."""
        cfg = self.config
        self.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive, clean_start=True) \
            if self.mqtt5 else self.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
        self.client.loop_start()
        self._started = True
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self._lost is not None, timeout)
            connack, lost = self._connack, self._lost
        if connack is None:
            raise SessionLost(f"no CONNACK ({lost or 'timeout'})")
        code, text = connack
        if code != 0:
            raise ConnectRefused(describe_refusal(code, text), code)

    def subscribe(self, topics: tuple[str, ...] | list[str]) -> None:
        """Subscribe at QoS 1; on MQTT 5 with no-local so our own publishes never come back."""
        if self.mqtt5:
            subs: list[tuple[str, Any]] = [(t, SubscribeOptions(qos=1, noLocal=True)) for t in topics]
        else:
            subs = [(t, 1) for t in topics]
        rc, _ = self.client.subscribe(subs)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionLost(f"subscribe failed: {mqtt.error_string(rc)}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue one publish; returns its message id. Raises SessionLost when not connected."""
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SessionLost(f"publish failed: {mqtt.error_string(info.rc)}")
        return info.mid

    @property
    def lost(self) -> str | None:
        """Why the connection ended, or None while it is up."""
        return self._lost

    def wait(self, timeout: float) -> None:
        """Block until a PUBACK arrives, the connection ends, :meth:`wake` is called, or ``timeout`` passes."""
        with self._cond:
            if not self._acks and self._lost is None and not self._woken:
                self._cond.wait(timeout)
            self._woken = False

    def wake(self) -> None:
        """End the current (or the next) :meth:`wait` early; any thread."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def take_acks(self) -> dict[int, int]:
        """PUBACKs received since the last call (mid → reason code, 0 on MQTT 3.1.1)."""
        with self._cond:
            acks, self._acks = self._acks, {}
        return acks

    def close(self) -> None:
        """Send DISCONNECT if still connected and stop the network thread."""
        if self._lost is None:
            try:
                self.client.disconnect()
            except Exception:  # already broken; the loop is stopped below anyway
                pass
        if self._started:
            self.client.loop_stop()
            self._started = False
