"""The devices the gateway has sent data for, re-announced with v1/gateway/connect after every reconnect."""
from __future__ import annotations

import time
from collections import OrderedDict

#: devices re-announced after a reconnect: at most this many, seen within this many seconds
MAX_KNOWN_DEVICES = 10_000
KNOWN_DEVICE_TTL = 24 * 3600.0


class KnownDevices:
    """Device name → (type, last seen), bounded to the most recent MAX_KNOWN_DEVICES.

    ThingsBoard drops sub-device sessions when the gateway reconnects, so these are announced
    again; only the sender thread calls it.
    """

    def __init__(self) -> None:
        self._devices: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def remember(self, device: str, device_type: str) -> None:
        """Note ``device`` (with its type) as seen now."""
        devices = self._devices
        devices[device] = (device_type, time.monotonic())
        devices.move_to_end(device)
        if len(devices) > MAX_KNOWN_DEVICES:
            devices.popitem(last=False)

    def forget(self, device: str) -> None:
        """Drop ``device`` (disconnected for inactivity): it is not re-announced until it posts again."""
        self._devices.pop(device, None)

    def to_reannounce(self) -> list[tuple[str, str]]:
        """(name, type) of every device seen within KNOWN_DEVICE_TTL, oldest first."""
        cutoff = time.monotonic() - KNOWN_DEVICE_TTL
        devices = self._devices
        while devices:
            _, (_, seen) = next(iter(devices.items()))
            if seen >= cutoff:
                break
            devices.popitem(last=False)
        return [(name, dtype) for name, (dtype, _) in devices.items()]
