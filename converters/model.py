"""The converted-data model: what a converter hands the gateway for one device message."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TelemetryEntry:
    """Telemetry values sharing one timestamp (milliseconds since the epoch)."""

    ts: int
    values: dict[str, Any]


@dataclass(slots=True)
class SkippedValue:
    """A configured key left out of a message, and why (reported to the device and the log)."""

    key: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "reason": self.reason}


@dataclass(slots=True)
class ConvertedData:
    """One device's data from one message: name, type (device profile), attributes and telemetry."""

    device_name: str
    device_type: str = "default"
    attributes: dict[str, Any] = field(default_factory=dict)
    telemetry: list[TelemetryEntry] = field(default_factory=list)
    skipped: list[SkippedValue] = field(default_factory=list)

    def add_telemetry(self, values: dict[str, Any], ts: int) -> None:
        """Add values at ``ts``, merging into an existing entry with the same timestamp."""
        if not values:
            return
        for entry in self.telemetry:
            if entry.ts == ts:
                entry.values.update(values)
                return
        self.telemetry.append(TelemetryEntry(ts, dict(values)))

    def is_empty(self) -> bool:
        """True when there is nothing to send (no attributes and no telemetry values)."""
        return not self.attributes and not any(e.values for e in self.telemetry)

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready form kept in storage and read back by the MQTT sender."""
        record: dict[str, Any] = {"device": self.device_name, "type": self.device_type}
        if self.attributes:
            record["attributes"] = self.attributes
        telemetry = [{"ts": e.ts, "values": e.values} for e in self.telemetry if e.values]
        if telemetry:
            record["telemetry"] = telemetry
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ConvertedData:
        """Inverse of :meth:`to_record`."""
        return cls(
            device_name=record["device"],
            device_type=record.get("type") or "default",
            attributes=dict(record.get("attributes") or {}),
            telemetry=[TelemetryEntry(int(e["ts"]), dict(e["values"])) for e in record.get("telemetry") or ()],
        )
