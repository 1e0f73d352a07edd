"""Adapts whatever a converter returns (ConvertedData, lists, the gateway's legacy dict) to ConvertedData.

The legacy dict is the form ThingsBoard IoT Gateway converters used to return::

    {"deviceName": "SN-1", "deviceType": "thermo",
     "attributes": [{"model": "T1"}],
     "telemetry": [{"temp": 21.5}, {"ts": 1700000000000, "values": {"temp": 21.4}}]}

Telemetry items without a ``ts`` share the receive time. It is accepted (a warning is logged once
per converter) so old converters keep working; new converters should return ConvertedData.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from converters.base import ConversionError
from converters.model import ConvertedData
from converters.timestamps import TimestampError, parse_timestamp
from converters.timestamps import now_ms as clock_ms

log = logging.getLogger("converters.legacy")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(source: str) -> None:
    with _warned_lock:
        if source in _warned:
            return
        _warned.add(source)
    log.warning(
        "converter %s returned the legacy dict form; it is adapted, but returning ConvertedData "
        "is the supported form (see docs/custom-converters.md)",
        source,
    )


def normalize_result(
    result: Any, source: str, now_ms: Callable[[], int] | None = None
) -> list[ConvertedData]:
    """Turn a converter's return value into a list of ConvertedData; ConversionError naming ``source``.

    Accepts ConvertedData, a legacy dict, a list mixing both, or None (nothing to send).
    ``now_ms`` gives the time used for legacy telemetry without a ``ts`` (default: the clock).
    """
    if result is None:
        return []
    items = result if isinstance(result, list | tuple) else [result]
    out: list[ConvertedData] = []
    clock = now_ms or clock_ms
    for index, item in enumerate(items):
        where = f"{source} result[{index}]" if isinstance(result, list | tuple) else f"{source} result"
        if isinstance(item, ConvertedData):
            _check_name(item.device_name, where)
            out.append(item)
        elif isinstance(item, Mapping):
            _warn_once(source)
            out.append(_from_legacy(item, where, clock))
        elif item is None:
            continue
        else:
            raise ConversionError(
                f"{where} is a {type(item).__name__}; a converter must return ConvertedData, "
                "a list of them, the legacy dict or None"
            )
    return out


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConversionError(f"{where} has no device name (got {name!r})")


def _from_legacy(item: Mapping[str, Any], where: str, clock: Callable[[], int]) -> ConvertedData:
    name = item.get("deviceName")
    if isinstance(name, int | float) and not isinstance(name, bool):
        name = str(name)
    _check_name(name, where)
    device_type = item.get("deviceType") or "default"
    if not isinstance(device_type, str):
        raise ConversionError(f"{where}: deviceType must be a string, got {type(device_type).__name__}")
    data = ConvertedData(device_name=name, device_type=device_type)
    for attrs in _pieces(item.get("attributes"), f"{where}.attributes"):
        data.attributes.update(attrs)
    now: int | None = None
    for entry in _pieces(item.get("telemetry"), f"{where}.telemetry"):
        if "values" in entry and isinstance(entry.get("values"), Mapping):
            extra = set(entry) - {"ts", "values"}
            if extra:
                raise ConversionError(f"{where}.telemetry: unexpected keys {sorted(extra)} beside values")
            if entry.get("ts") is None:
                now = clock() if now is None else now
                ts = now
            else:
                try:
                    ts = parse_timestamp(entry["ts"])
                except TimestampError as exc:
                    raise ConversionError(f"{where}.telemetry: ts {exc}") from None
            data.add_telemetry(dict(entry["values"]), ts)
        else:
            now = clock() if now is None else now
            data.add_telemetry(dict(entry), now)
    return data


def _pieces(value: Any, where: str) -> list[Mapping[str, Any]]:
    """A legacy ``attributes``/``telemetry`` value as a list of dicts (a lone dict is accepted)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        return list(value)
    raise ConversionError(f"{where} must be a list of objects")
