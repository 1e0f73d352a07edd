"""Requests waiting for ThingsBoard's answer (``response.responseExpected``): one waiter per request, per device.

A mapping with ``responseExpected`` stores the device's data, then waits until ThingsBoard (a rule
chain) sets the shared attribute ``responseAttribute`` on that device; the attribute update reaches
the connector as ``on_attribute_update(device, data)`` and its value is handed to the oldest request
of *that device* waiting for *that attribute* — one update answers one request, and a value for
device A never reaches device B's request (the reference's queue is global). The number of waiting
requests is bounded: past it :meth:`ResponseWaits.open` returns None and the caller answers 503.
Each waiting request blocks only its own server thread (the connector adds one thread per allowed
wait, as for device API long polls).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Closed(Exception):
    """The connector is stopping: no answer will come."""


class Waiter:
    """One request waiting for ``attribute`` on ``device``."""

    __slots__ = ("device", "attribute", "value", "answered", "closed", "_event")

    def __init__(self, device: str, attribute: str) -> None:
        self.device = device
        self.attribute = attribute
        self.value: Any = None
        self.answered = False
        self.closed = False
        self._event = threading.Event()

    def _answer(self, value: Any) -> None:
        self.value, self.answered = value, True
        self._event.set()

    def _close(self) -> None:
        self.closed = True
        self._event.set()


class ResponseWaits:
    """The registry of waiting requests, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._by_device: dict[str, deque[Waiter]] = {}
        self._count = 0
        self._closed = False
        self.counts = {"answered": 0, "timeouts": 0, "refused": 0}

    def open(self, device: str, attribute: str) -> Waiter | None:
        """Register a request before its data is stored (so a fast answer is not missed); None when full.

        Raises :class:`Closed` when the connector is stopping.
        """
        with self._lock:
            if self._closed:
                raise Closed
            if self._count >= self.limit:
                self.counts["refused"] += 1
                return None
            waiter = Waiter(device, attribute)
            self._by_device.setdefault(device, deque()).append(waiter)
            self._count += 1
            return waiter

    def wait(self, waiter: Waiter, timeout: float) -> Any:
        """The value ThingsBoard set; raises TimeoutError after ``timeout`` seconds, :class:`Closed` on stop."""
        try:
            waiter._event.wait(timeout)
        finally:
            self.cancel(waiter)
        if waiter.answered:
            return waiter.value
        if waiter.closed:
            raise Closed
        with self._lock:
            self.counts["timeouts"] += 1
        raise TimeoutError

    def cancel(self, waiter: Waiter) -> None:
        """Forget ``waiter`` (answered, timed out, or its data could not be stored); idempotent."""
        with self._lock:
            queue = self._by_device.get(waiter.device)
            if queue is None or waiter not in queue:
                return
            queue.remove(waiter)
            if not queue:
                del self._by_device[waiter.device]
            self._count -= 1

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        """Hand each updated key to the oldest request of ``device`` waiting for it."""
        with self._lock:
            queue = self._by_device.get(device)
            if not queue:
                return
            for key, value in data.items():
                waiter = next((w for w in queue if w.attribute == key and not w.answered), None)
                if waiter is None:
                    continue
                waiter._answer(value)
                queue.remove(waiter)
                self._count -= 1
                self.counts["answered"] += 1
            if not queue:
                del self._by_device[device]

    def close(self) -> None:
        """Stop: every waiting request returns at once (its caller answers 503)."""
        with self._lock:
            self._closed = True
            waiters = [w for queue in self._by_device.values() for w in queue]
            self._by_device.clear()
            self._count = 0
        for waiter in waiters:
            waiter._close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": self._count, "limit": self.limit, **self.counts}
