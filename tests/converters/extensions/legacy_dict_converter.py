"""Test extension: a converter written for ThingsBoard IoT Gateway that returns the legacy dict form."""

from __future__ import annotations

from typing import Any


class LegacyDictConverter:
    """Duck-typed (no Converter base class), one-argument constructor, legacy dict result."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.prefix = config.get("extensionConfig", {}).get("prefix", "")

    def convert(self, config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {
            "deviceName": self.prefix + str(data["serial"]),
            "deviceType": "legacy",
            "attributes": [{"fw": data.get("fw")}, {"site": "lab"}],
            "telemetry": [
                {"temp": data["temp"]},
                {"ts": 1600000000000, "values": {"temp": data["old_temp"]}},
            ],
        }
