"""When each device last posted data, and which connector it came through (device inactivity, ``devices`` RPC).

Connectors' threads note each stored message; the sender thread asks which connected devices have
been silent too long (``thingsboard.checkingDeviceActivity``) and disconnects them. Bounded: beyond
:data:`MAX_TRACKED_DEVICES` the least recently posting device is forgotten first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

MAX_TRACKED_DEVICES = 10_000


class DeviceActivity:
    """Device name → (connector name or None, monotonic time of its last stored message). Thread-safe."""

    def __init__(self, max_devices: int = MAX_TRACKED_DEVICES) -> None:
        self._max = max_devices
        self._devices: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._devices)

    def posted(self, names: Iterable[str], connector: str | None, now: float | None = None) -> None:
        """``names`` just had a message stored, through ``connector``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            devices = self._devices
            for name in names:
                devices[name] = (connector, now)
                devices.move_to_end(name)
            while len(devices) > self._max:
                devices.popitem(last=False)

    def idle(self, among: Iterable[str], timeout: float, now: float | None = None) -> list[str]:
        """The devices of ``among`` silent for ``timeout`` seconds or more, oldest first.

        A device with no record (its data was stored before this process started, or it was
        forgotten) starts its clock now, as the reference gateway does.
        """
        now = time.monotonic() if now is None else now
        silent: list[tuple[float, str]] = []
        with self._lock:
            devices = self._devices
            for name in among:
                record = devices.get(name)
                if record is None:
                    devices[name] = (None, now)
                elif now - record[1] >= timeout:
                    silent.append((record[1], name))
            while len(devices) > self._max:
                devices.popitem(last=False)
        return [name for _, name in sorted(silent)]

    def is_idle(self, name: str, timeout: float, now: float | None = None) -> bool:
        """True when ``name`` has a record and has been silent for ``timeout`` seconds or more."""
        now = time.monotonic() if now is None else now
        with self._lock:
            record = self._devices.get(name)
        return record is not None and now - record[1] >= timeout

    def forget(self, name: str) -> None:
        """Drop ``name`` (it was disconnected); its next message starts it again."""
        with self._lock:
            self._devices.pop(name, None)

    def devices(self) -> dict[str, str | None]:
        """Every tracked device → the connector it last posted through (None: not known in this process)."""
        with self._lock:
            return {name: connector for name, (connector, _) in self._devices.items()}
