"""Watches the config files on disk (``reload.watch``) and asks for a reload when one has changed.

Every ``interval`` seconds each file's modification time, size and SHA-256 are read (the files
are small; hashing catches an edit that keeps size and mtime). A change is acted on once the
files have stayed the same for one more interval, so an editor's or a deploy tool's several
writes give one reload, not a reload of a half-written file. A missing file counts as a change
(the reload then reports it). No dependency beyond the standard library is needed for this.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable

Fingerprint = tuple[int, int, str] | None  # (mtime ns, size, sha256), None when the file cannot be read


def fingerprint(path: str) -> Fingerprint:
    """What identifies the content of ``path`` now, or None when it cannot be read."""
    try:
        stat = os.stat(path)
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, digest


class ConfigWatcher:
    """A thread polling ``paths()`` every ``interval`` s; calls ``on_change(reason)`` after a settled change."""

    def __init__(self, paths: Callable[[], list[str]], interval: float, on_change: Callable[[str], object],
                 logger: logging.Logger) -> None:
        self._paths = paths
        self.interval = interval
        self._on_change = on_change
        self.log = logger
        self._baseline: dict[str, Fingerprint] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _now(self) -> dict[str, Fingerprint]:
        return {path: fingerprint(path) for path in self._paths()}

    def rebaseline(self) -> None:
        """Take the files as they are now as the known state (after a reload, whatever asked for it)."""
        current = self._now()
        with self._lock:
            self._baseline = current

    def start(self) -> None:
        self.rebaseline()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()
        self.log.info("watching %s for changes every %g s", ", ".join(sorted(self._baseline)), self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        pending: dict[str, Fingerprint] | None = None  # a change seen once, waiting to settle
        while not self._stop.wait(self.interval):
            try:
                current = self._now()
                with self._lock:
                    changed = sorted(p for p in current if current[p] != self._baseline.get(p))
                if not changed:
                    pending = None
                elif pending != current:
                    pending = current  # act once it has stayed like this for one interval
                else:
                    pending = None
                    with self._lock:
                        self._baseline = current
                    self._on_change("change on disk of " + ", ".join(changed))
            except Exception:  # the watcher must keep watching
                self.log.exception("config watcher: unexpected error")
