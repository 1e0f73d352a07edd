"""A real MQTT subscriber that plays ThingsBoard and counts the telemetry entries the gateway delivers."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class DeliveryCounter:
    """Subscribes to ``v1/gateway/#`` at QoS 1 and counts telemetry entries, connects and messages."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.entries = 0  # telemetry entries: one per accepted message
        self.publishes = 0
        self.connects = 0
        self.malformed = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter", protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    props: object) -> None:
        client.subscribe([("v1/gateway/telemetry", 1), ("v1/gateway/connect", 1)])

    def _on_subscribe(self, *args: object) -> None:
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == "v1/gateway/connect":
            with self._lock:
                self.connects += 1
            return
        try:
            body = json.loads(message.payload)
            entries = sum(len(v) for v in body.values() if isinstance(v, list))
        except (ValueError, AttributeError):
            with self._lock:
                self.malformed += 1
            return
        with self._lock:
            self.entries += entries
            self.publishes += 1

    def start(self, timeout: float = 10.0) -> DeliveryCounter:
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self._ready.wait(timeout):
            self.close()
            raise RuntimeError("the counting subscriber did not subscribe")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> tuple[int, int, int]:
        """(telemetry entries, telemetry publishes, connects) so far."""
        with self._lock:
            return self.entries, self.publishes, self.connects

    def drain(self, pending: Callable[[], int], base: int, expected: int, timeout: float) -> float:
        """Wait until the gateway's queue is empty (``pending()`` is 0) and the count has gone quiet:
        0.5 s without a new entry once ``expected`` entries past ``base`` arrived, 5 s if they never do.
        Returns the seconds until all ``expected`` arrived (or the time waited when they did not)."""
        start = time.monotonic()
        reached: float | None = None
        last, since = -1, start
        while time.monotonic() - start < timeout:
            now = time.monotonic()
            got = self.snapshot()[0] - base
            if reached is None and got >= expected:
                reached = now - start
            if got != last:
                last, since = got, now
            elif now - since >= 0.5 and (reached is not None or now - since >= 5.0) and pending() == 0:
                break
            time.sleep(0.05)
        return reached if reached is not None else time.monotonic() - start

    def wait_quiet(self, at_least: int, quiet: float = 0.5, timeout: float = 60.0) -> bool:
        """Wait until ``at_least`` entries arrived and nothing more arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.snapshot()[0]
            if now != last:
                last, since = now, time.monotonic()
            elif now >= at_least and time.monotonic() - since >= quiet:
                return True
            time.sleep(0.05)
        return False
