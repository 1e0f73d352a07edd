"""A converter's config model: the ``converter`` section of a mapping, normalised from either format."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DataPointConfig:
    """One configured attribute or timeseries entry."""

    key: str  # an expression: may contain ${...}
    value: str  # an expression
    type: str = "string"
    ts_field: str | None = None


@dataclass(frozen=True, slots=True)
class ConverterConfig:
    """A mapping's converter section, whichever rest.json format it was written in."""

    type: str  # "json" | "custom"
    device_name_expression: str
    device_name_source: str = "request"  # "request" | "constant"
    device_type_expression: str = "default"
    device_type_source: str = "request"
    attributes: tuple[DataPointConfig, ...] = ()
    timeseries: tuple[DataPointConfig, ...] = ()
    extension: str | None = None
    extension_config: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the section as written, for custom converters
