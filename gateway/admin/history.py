"""The delivery rate over the last hour: a bounded ring of samples of the events-sent counter.

One sample every :data:`INTERVAL` seconds (360 in an hour, a few kilobytes), taken by a small
thread; the status page turns consecutive samples into events per second, plus the interval still
running (from the last sample to now), so a freshly started gateway already shows a point.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 10.0
SPAN = 3600.0


@dataclass(frozen=True, slots=True)
class RatePoint:
    """Events sent between ``start`` and ``end`` (Unix seconds)."""

    start: float
    end: float
    events: int

    @property
    def rate(self) -> float:
        """Events per second; a running interval younger than a second counts as one (no spike at start)."""
        return self.events / max(self.end - self.start, 1.0)


class DeliveryHistory:
    """Samples ``read_total()`` (a running total of events sent) every ``interval`` seconds."""

    def __init__(self, read_total: Callable[[], int], interval: float = INTERVAL, span: float = SPAN,
                 clock: Callable[[], float] = time.time) -> None:
        self.read_total = read_total
        self.interval = interval
        self.span = span
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(span / interval) + 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Record the counter now (the oldest sample goes once the ring is full)."""
        point = (self.clock(), int(self.read_total()))
        with self._lock:
            self._samples.append(point)

    def points(self) -> list[RatePoint]:
        """Events per interval over the last ``span`` seconds, oldest first, the running interval last."""
        now, total = self.clock(), int(self.read_total())
        with self._lock:
            samples = list(self._samples)
        samples.append((now, total))
        points = [RatePoint(a[0], b[0], max(b[1] - a[1], 0)) for a, b in zip(samples, samples[1:], strict=False)
                  if b[0] > a[0]]
        return [p for p in points if p.end >= now - self.span]

    def start(self) -> None:
        """Take the first sample now and the next ones from a background thread."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rgw-status-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # the counter's owner is stopping; the page shows what it has
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
