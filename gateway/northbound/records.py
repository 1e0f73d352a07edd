"""Stored event records read for packing: the line layout spliced as bytes, plain JSON parsed and validated.

Two stored forms exist, both JSON (see docs/storage.md, "Record format"):

* plain compact JSON ``{"device":..,"type":..,"attributes":{..},"telemetry":[{"ts":..,"values":{..}}]}``
  (every record written before the line layout, and data of unexpected types): parsed and validated;
* the **line layout** written by :func:`gateway.uplink.encode_record`, one part per line::

      {"device":"SN-1"
      ,"type":"Thermometer"
      ,"attributes":{"model":"T1000"}
      ,"dp":[2]
      ,"telemetry":[
      {"ts":1700000000000,"values":{"temperature":32.0,"humidity":67.0}}
      ]
      }

  Compact JSON never holds a raw line break (strings escape it), so splitting on ``\\n`` finds the
  parts without parsing them: the telemetry entries and the attributes object go into a publish
  as they are; only the device name and type (cached) are decoded. ``dp`` gives each entry's
  number of values (for the data-point limits).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _text_encoder() -> Callable[[Any], str]:
    """``_STRICT.encode`` without building a C encoder per call (what JSONEncoder.encode does), ~2x faster.

    Built once without circular-reference markers, so it is safe to share between threads; a cycle
    ends in RecursionError, turned into the ValueError JSONEncoder would raise.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _STRICT.encode
    chunks = make(None, _STRICT.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def text(obj: Any) -> str:
        if isinstance(obj, str):
            return json.encoder.encode_basestring(obj)
        try:
            return "".join(chunks(obj, 0))
        except RecursionError:
            raise ValueError("Circular reference detected") from None

    return text


#: compact JSON text, no NaN/Infinity (ValueError), TypeError for non-JSON values
encode_text: Callable[[Any], str] = _text_encoder()

#: one telemetry entry: (its JSON bytes or None if not encodable, number of values, the entry if parsed)
Entry = tuple[bytes | None, int, dict[str, Any] | None]
#: a read record: (device, type, device as JSON key, attributes (JSON object bytes, dict or None), entries)
Record = tuple[str, str, bytes, bytes | dict[str, Any] | None, list[Entry]]

_CACHE_LIMIT = 10_000


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON; raises ValueError for NaN/Infinity and TypeError for non-JSON values."""
    return encode_text(obj).encode()


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("device name must be a non-empty string")


def validate_record(record: Any) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    """Check a stored record; returns (device, type, attributes, telemetry) or raises ValueError."""
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    device = record.get("device")
    check_name(device)
    dtype = record.get("type")
    if dtype is None or dtype == "":
        dtype = "default"
    if not isinstance(dtype, str):
        raise ValueError("device type must be a string")
    attributes = record.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueError("attributes must be an object")
    telemetry = record.get("telemetry") or []
    if not isinstance(telemetry, list):
        raise ValueError("telemetry must be an array")
    for entry in telemetry:
        ok = isinstance(entry, dict) and is_int(entry.get("ts")) and isinstance(entry.get("values"), dict)
        if not ok:
            raise ValueError("telemetry entries must be {ts: int, values: object}")
    return device, dtype, attributes, telemetry


class RecordReader:
    """Reads stored records into :data:`Record`; keeps the decoded device names and types it met."""

    def __init__(self) -> None:
        self._devices: dict[bytes, tuple[str, bytes]] = {}  # JSON name -> (name, canonical JSON)
        self._types: dict[bytes, str] = {}

    def read(self, payload: Any) -> Record:
        """One stored record; raises ValueError (or TypeError, UnicodeDecodeError) when it is invalid."""
        if isinstance(payload, bytes) and b"\n" in payload:
            try:
                record = self._read_lines(payload)
            except (ValueError, TypeError, IndexError, UnicodeDecodeError):
                record = None  # the JSON reading below says what is wrong with it
            if record is not None:
                return record
        return self._read_json(json.loads(payload) if isinstance(payload, bytes | str) else payload)

    def _read_lines(self, payload: bytes) -> Record | None:
        """The line layout, or None when the lines are not laid out as expected (then read as JSON)."""
        lines = payload.split(b"\n")
        end = len(lines) - 1
        if end < 2 or lines[end] != b"}" or not lines[0].startswith(b'{"device":') \
                or not lines[1].startswith(b',"type":'):
            return None
        name, key = self._device(lines[0][10:])
        dtype = self._type(lines[1][8:])
        index = 2
        attributes: bytes | None = None
        if index < end and lines[index].startswith(b',"attributes":'):
            attributes = lines[index][14:]
            if len(attributes) < 2 or attributes[:1] != b"{" or attributes[-1:] != b"}":
                return None
            if attributes == b"{}":
                attributes = None
            index += 1
        entries: list[Entry] = []
        if index < end and lines[index].startswith(b',"dp":['):
            counts = lines[index][7:-1].split(b",")
            items = lines[index + 2:end - 1]
            if lines[index + 1] != b',"telemetry":[' or lines[end - 1] != b"]" or len(items) != len(counts):
                return None
            first = True
            for item, count in zip(items, counts, strict=True):
                if not first:
                    if item[:1] != b",":
                        return None
                    item = item[1:]
                first = False
                entries.append((item, int(count), None))
            index = end
        if index != end:
            return None
        return name, dtype, key, attributes, entries

    def _device(self, raw: bytes) -> tuple[str, bytes]:
        known = self._devices.get(raw)
        if known is None:
            name = json.loads(raw)
            check_name(name)
            known = (name, encode(name))
            if len(self._devices) >= _CACHE_LIMIT:
                self._devices.clear()
            self._devices[raw] = known
        return known

    def _type(self, raw: bytes) -> str:
        known = self._types.get(raw)
        if known is None:
            dtype = json.loads(raw)
            if dtype is None or dtype == "":
                dtype = "default"
            if not isinstance(dtype, str):
                raise ValueError("device type must be a string")
            if len(self._types) >= _CACHE_LIMIT:
                self._types.clear()
            self._types[raw] = known = dtype
        return known

    @staticmethod
    def _read_json(record: Any) -> Record:
        device, dtype, attributes, telemetry = validate_record(record)
        entries: list[Entry] = []
        for entry in telemetry:
            values = entry["values"]
            if not values:
                continue
            try:
                item: bytes | None = encode({"ts": entry["ts"], "values": values})
            except (ValueError, TypeError):
                item = None  # the packer splits it by key and dead-letters what is not JSON
            entries.append((item, len(values), entry))
        return device, dtype, encode(device), attributes or None, entries
