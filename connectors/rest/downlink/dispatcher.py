"""A bounded worker pool that runs each device's downlink work in order and different devices in parallel."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

#: worker threads and the most jobs waiting across all devices (fixed limits; see docs/downlink.md)
DEFAULT_WORKERS = 8
DEFAULT_MAX_PENDING = 10_000


class DispatcherFull(RuntimeError):
    """Too many jobs are waiting (or the dispatcher is stopped); the job was not queued."""


class DeviceDispatcher:
    """Jobs for one device run one at a time in submission order; other devices are not held up.

    A device with queued jobs is handed to one worker at a time; after each job it goes to the back
    of the ready queue, so a device with many jobs cannot starve the others. A slow job stalls only
    its own device (and one worker).
    """

    def __init__(self, logger: logging.Logger, workers: int = DEFAULT_WORKERS,
                 max_pending: int = DEFAULT_MAX_PENDING, name: str = "rgw-downlink") -> None:
        self.log = logger
        self.workers = workers
        self.max_pending = max_pending
        self.name = name
        self._cond = threading.Condition()
        self._jobs: dict[str, deque[Callable[[], None]]] = {}
        self._ready: deque[str] = deque()
        self._running: set[str] = set()
        self._pending = 0
        self._active = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, device: str, job: Callable[[], None]) -> None:
        """Queue ``job`` behind ``device``'s earlier jobs; raises :class:`DispatcherFull`."""
        with self._cond:
            if self._stopping or not self._threads:
                raise DispatcherFull("the downlink is stopped")
            if self._pending >= self.max_pending:
                raise DispatcherFull(f"{self._pending} downlink jobs are waiting (limit {self.max_pending})")
            queue = self._jobs.get(device)
            if queue is None:
                queue = self._jobs[device] = deque()
            queue.append(job)
            self._pending += 1
            if device not in self._running and len(queue) == 1:
                self._ready.append(device)
                self._cond.notify()

    @property
    def alive(self) -> bool:
        """Every worker thread is running (True before start and after stop: nothing is missing)."""
        return all(thread.is_alive() for thread in self._threads)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not (self._stopping and self._pending == 0):
                    self._cond.wait()
                if not self._ready:
                    return
                device = self._ready.popleft()
                job = self._jobs[device].popleft()
                self._running.add(device)
                self._active += 1
            try:
                job()
            except Exception:
                self.log.exception("downlink job for device %s failed", device)
            with self._cond:
                self._running.discard(device)
                self._pending -= 1
                self._active -= 1
                if self._jobs[device]:
                    self._ready.append(device)
                    self._cond.notify()
                else:
                    del self._jobs[device]
                if self._stopping:
                    self._cond.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, let queued ones finish (up to ``timeout``), then join the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.log.warning("downlink worker %s did not finish in %.0f s", thread.name, timeout)
        self._threads = []
