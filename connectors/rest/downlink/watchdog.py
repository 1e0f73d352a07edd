"""One long-lived thread that shuts down the sockets of HTTP exchanges still running at their deadline."""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

#: compact the heap once this many cancelled watches sit in it (and they are more than half of it)
_COMPACT_AT = 256


class Watch:
    """One armed deadline; the socket it cuts is attached (and replaced) as the exchange opens it."""

    __slots__ = ("deadline", "sock", "fired", "cancelled")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.fired = False
        self.cancelled = False


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a blocked connect, send or read returns at once
    except OSError:
        pass  # already closed, or not connected yet


class Watchdog:
    """Deadlines of many exchanges on one thread (started at the first :meth:`arm`, ended by :meth:`close`).

    ``arm`` is a heap push (and a wake-up only when the new deadline is the earliest); ``disarm`` only
    marks the watch cancelled. At a deadline the thread marks the watch fired and shuts its socket
    down, so whatever the exchange is blocked in fails at once.
    """

    def __init__(self, name: str = "rgw-relay-watchdog") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> Watch:
        """Watch an exchange until ``deadline`` (a ``time.monotonic()`` value); inert after :meth:`close`."""
        watch = Watch(deadline)
        with self._cond:
            if self._closed:
                return watch
            item = (deadline, next(self._seq), watch)
            heapq.heappush(self._heap, item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0] is item:
                self._cond.notify()
        return watch

    def attach(self, watch: Watch, sock: socket.socket | None) -> None:
        """The socket the exchange now uses; shut down at once if the deadline has already passed."""
        if sock is None:
            return
        with self._cond:
            if not watch.fired:
                watch.sock = sock
                return
        _shutdown(sock)

    def disarm(self, watch: Watch) -> bool:
        """Stop watching; True when the deadline fired first (the exchange was cut)."""
        with self._cond:
            watch.sock = None
            if watch.fired or watch.cancelled:
                return watch.fired
            watch.cancelled = True
            self._cancelled += 1
            if self._cancelled >= _COMPACT_AT and 2 * self._cancelled > len(self._heap):
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0
            return False

    @property
    def armed(self) -> int:
        """Watches neither fired nor cancelled yet."""
        with self._cond:
            return sum(1 for item in self._heap if not (item[2].cancelled or item[2].fired))

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, watch = self._heap[0]
                if watch.cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                    continue
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                watch.fired = True
                sock, watch.sock = watch.sock, None
                if sock is not None:
                    _shutdown(sock)

    def close(self) -> None:
        """End the thread; later :meth:`arm` calls return watches that never fire."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cancelled = 0
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
