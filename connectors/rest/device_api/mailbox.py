"""Per-device downlink for HTTP long polls and CoAP observations: shared-attribute updates merged per
key, RPCs queued with expiry.

ThingsBoard drops what arrives while no poll waits; here it is kept (bounded) until the next poll or
notification. Waiting polls block on a per-device condition; :meth:`Mailboxes.close` wakes every one
of them. CoAP observers do not block: they register a listener that is called on every put, take
what is pending, and give it back when the notification was not acknowledged.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Closed(Exception):
    """The mailboxes were closed (the gateway is stopping) while a poll waited."""


@dataclass(slots=True)
class QueuedRpc:
    """A server-side RPC waiting for the device (``expires`` on the monotonic clock)."""

    request_id: int
    method: str
    params: Any
    expires: float


@dataclass(slots=True)
class _Box:
    cond: threading.Condition
    updates: dict[str, Any] = field(default_factory=dict)
    deleted: dict[str, None] = field(default_factory=dict)  # ordered set
    rpcs: deque[QueuedRpc] = field(default_factory=deque)
    awaiting_reply: dict[int, float] = field(default_factory=dict)  # RPC id → expiry
    listeners: list[Callable[[], None]] = field(default_factory=list)


class Mailboxes:
    """All devices' pending downlink. Thread-safe; times in seconds."""

    def __init__(self, rpc_ttl: float, max_pending_keys: int, max_queued_rpc: int) -> None:
        self.rpc_ttl = rpc_ttl
        self.max_pending_keys = max_pending_keys
        self.max_queued_rpc = max_queued_rpc
        self._lock = threading.Lock()
        self._boxes: dict[str, _Box] = {}
        self._closed = False
        self.counters = {"attribute_updates_kept": 0, "attribute_keys_dropped": 0, "rpc_queued": 0,
                         "rpc_expired": 0, "rpc_dropped": 0, "rpc_delivered": 0, "rpc_replied": 0}

    def _box(self, device: str) -> _Box:
        box = self._boxes.get(device)
        if box is None:
            box = self._boxes[device] = _Box(threading.Condition(self._lock))
        return box

    # ------------------------------------------------------------- from ThingsBoard

    def put_attributes(self, device: str, data: dict[str, Any]) -> None:
        """Merge a shared-attribute update (``{"deleted": [...]}`` removes keys) into the pending one."""
        with self._lock:
            box = self._box(device)
            deleted = data.get("deleted")
            for key, value in data.items():
                if key == "deleted" and isinstance(deleted, list):
                    continue
                box.deleted.pop(key, None)
                box.updates.pop(key, None)  # re-insert: the newest key goes last
                box.updates[key] = value
            if isinstance(deleted, list):
                for key in deleted:
                    if isinstance(key, str):
                        box.updates.pop(key, None)
                        box.deleted[key] = None
            dropped = 0
            while len(box.updates) + len(box.deleted) > self.max_pending_keys:
                dropped += 1
                oldest = box.deleted if box.deleted else box.updates
                oldest.pop(next(iter(oldest)))
            self.counters["attribute_updates_kept"] += 1
            self.counters["attribute_keys_dropped"] += dropped
            box.cond.notify_all()
            listeners = list(box.listeners)
        for listener in listeners:
            listener()

    def put_rpc(self, device: str, request_id: int, method: str, params: Any) -> None:
        """Queue a server-side RPC until a poll takes it or it expires (the oldest dropped when full)."""
        with self._lock:
            box = self._box(device)
            self._expire(box, time.monotonic())
            if len(box.rpcs) >= self.max_queued_rpc:
                box.rpcs.popleft()
                self.counters["rpc_dropped"] += 1
            box.rpcs.append(QueuedRpc(request_id, method, params, time.monotonic() + self.rpc_ttl))
            self.counters["rpc_queued"] += 1
            box.cond.notify_all()
            listeners = list(box.listeners)
        for listener in listeners:
            listener()

    # ------------------------------------------------------------- polls

    def wait_attributes(self, device: str, timeout: float) -> dict[str, Any] | None:
        """The pending update as a flat map (plus ``"deleted"``), waiting up to ``timeout``; None on timeout."""
        with self._lock:
            box = self._box(device)
            if not self._wait(box, lambda: bool(box.updates or box.deleted), timeout):
                return None
            result = dict(box.updates)
            if box.deleted:
                result["deleted"] = list(box.deleted)
            box.updates, box.deleted = {}, {}
            return result

    def wait_rpc(self, device: str, timeout: float) -> QueuedRpc | None:
        """The oldest unexpired RPC, waiting up to ``timeout``; None on timeout."""
        with self._lock:
            box = self._box(device)

            def ready() -> bool:
                self._expire(box, time.monotonic())
                return bool(box.rpcs)

            if not self._wait(box, ready, timeout):
                return None
            rpc = box.rpcs.popleft()
            self._delivered(box, rpc)
            return rpc

    def _delivered(self, box: _Box, rpc: QueuedRpc) -> None:
        now = time.monotonic()
        box.awaiting_reply = {i: t for i, t in box.awaiting_reply.items() if t > now}
        box.awaiting_reply[rpc.request_id] = now + self.rpc_ttl
        self.counters["rpc_delivered"] += 1

    # ------------------------------------------------------------- observers (non-blocking)

    def add_listener(self, device: str, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the putting thread, outside the lock) whenever something arrives."""
        with self._lock:
            self._box(device).listeners.append(listener)

    def remove_listener(self, device: str, listener: Callable[[], None]) -> None:
        with self._lock:
            box = self._boxes.get(device)
            if box is not None and listener in box.listeners:
                box.listeners.remove(listener)

    def take_attributes(self, device: str) -> dict[str, Any] | None:
        """The pending update (as :meth:`wait_attributes` returns it) without waiting; None when none."""
        return self.wait_attributes(device, 0)

    def restore_attributes(self, device: str, update: dict[str, Any]) -> None:
        """Give back an update that did not reach the device; what arrived since is newer and wins.
        Whoever waits for the device (a poll, the observation that replaced the one that failed) is woken."""
        with self._lock:
            box = self._box(device)
            deleted = update.get("deleted")
            older = {k: v for k, v in update.items()
                     if not (k == "deleted" and isinstance(deleted, list))
                     and k not in box.updates and k not in box.deleted}
            box.updates = {**older, **box.updates}
            if isinstance(deleted, list):
                gone = {k: None for k in deleted
                        if isinstance(k, str) and k not in box.updates and k not in box.deleted}
                box.deleted = {**gone, **box.deleted}
            while len(box.updates) + len(box.deleted) > self.max_pending_keys:
                oldest = box.deleted if box.deleted else box.updates
                oldest.pop(next(iter(oldest)))
                self.counters["attribute_keys_dropped"] += 1
            box.cond.notify_all()
            listeners = list(box.listeners)
        for listener in listeners:
            listener()

    def lease_rpc(self, device: str) -> QueuedRpc | None:
        """The oldest unexpired RPC, taken out of the queue but not yet delivered (see :meth:`confirm_rpc`)."""
        with self._lock:
            box = self._box(device)
            self._expire(box, time.monotonic())
            return box.rpcs.popleft() if box.rpcs else None

    def confirm_rpc(self, device: str, rpc: QueuedRpc) -> None:
        """The device acknowledged ``rpc``: it may now be answered."""
        with self._lock:
            self._delivered(self._box(device), rpc)

    def return_rpc(self, device: str, rpc: QueuedRpc) -> None:
        """``rpc`` did not reach the device: first in line again (unless it has expired meanwhile),
        and whoever waits for the device is woken."""
        with self._lock:
            box = self._box(device)
            if rpc.expires <= time.monotonic():
                self.counters["rpc_expired"] += 1
                return
            if len(box.rpcs) >= self.max_queued_rpc:
                self.counters["rpc_dropped"] += 1  # the oldest goes when full, as in put_rpc
                return
            box.rpcs.appendleft(rpc)
            box.cond.notify_all()
            listeners = list(box.listeners)
        for listener in listeners:
            listener()

    def take_reply_slot(self, device: str, request_id: int) -> bool:
        """True (once) when ``request_id`` was delivered to ``device`` and is still waiting for a reply."""
        with self._lock:
            box = self._boxes.get(device)
            if box is None:
                return False
            expires = box.awaiting_reply.pop(request_id, None)
            if expires is None or expires < time.monotonic():
                return False
            self.counters["rpc_replied"] += 1
            return True

    def _wait(self, box: _Box, ready: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ready():
            if self._closed:
                raise Closed()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            box.cond.wait(remaining)
        return True

    def _expire(self, box: _Box, now: float) -> None:
        while box.rpcs and box.rpcs[0].expires <= now:
            box.rpcs.popleft()
            self.counters["rpc_expired"] += 1

    # ------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Wake every waiting poll with :class:`Closed`."""
        with self._lock:
            self._closed = True
            for box in self._boxes.values():
                box.cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = dict(self.counters)
            stats["devices_with_pending_updates"] = sum(1 for b in self._boxes.values() if b.updates or b.deleted)
            stats["rpc_waiting_for_poll"] = sum(len(b.rpcs) for b in self._boxes.values())
        return stats


class PollSlots:
    """Bounds how many requests may wait at once (each holds one HTTP worker thread while it waits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.active = 0
        self.refused = 0

    def try_acquire(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                self.refused += 1
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1
