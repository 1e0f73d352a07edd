"""The built-in ``json`` converter: ``${...}`` templates from the mapping config, compiled once.

Behaviour (each point departs on purpose from the reference gateway, see the spec §4-6):

* Device name: a template; a missing value rejects the message with :class:`ConversionError`
  naming the expression (never a device literally named ``${sensorName}``). An empty name is
  rejected too.
* Device type (profile): a template; when its value is missing the type is ``"default"`` (the
  profile ThingsBoard gives an unknown device anyway) and a ``deviceType`` entry in ``skipped``
  says so.
* Attributes and timeseries: keys and values are templates; values are cast to the configured
  ``type`` (:mod:`converters.casting`). A missing value (absent or null) leaves the key out
  silently; a value that cannot be cast is left out and reported in ``skipped``.
* Telemetry gets one timestamp per message (:func:`converters.timestamps.message_timestamp`);
  an entry with a ``tsField`` uses its own parsed timestamp.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from converters.base import ConversionError, Converter, RequestData
from converters.casting import CastError, canonical_type, caster, to_text
from converters.config import ConverterConfig, ConverterConfigError, DataPointConfig
from converters.expressions import ExpressionError, MissingValue, Template, compile_template, constant
from converters.model import ConvertedData, SkippedValue
from converters.timestamps import TimestampError, message_timestamp, now_ms, parse_timestamp


@dataclass(frozen=True, slots=True)
class _Point:
    key: Template
    value: Template
    type: str
    ts: Template | None
    cast: Callable[[Any], Any]  # casting.caster(type), looked up once
    constant_key: str | None  # the key when it has no placeholder (the usual case)
    value_key: str | None  # the value's expression when it is one placeholder, e.g. "temp" for ${temp}


def _compile_point(point: DataPointConfig, where: str, problems: list[tuple[str, str]]) -> _Point | None:
    compiled: dict[str, Any] = {}
    for name, text in (("key", point.key), ("value", point.value)):
        try:
            compiled[name] = compile_template(text)
        except ExpressionError as exc:
            problems.append((f"{where}/{name}", str(exc)))
    try:
        kind = canonical_type(point.type)
    except ValueError as exc:
        problems.append((f"{where}/type", str(exc)))
        kind = "string"
    ts: Template | None = None
    if point.ts_field:
        text = point.ts_field if "${" in point.ts_field else "${" + point.ts_field + "}"
        try:
            ts = compile_template(text)
        except ExpressionError as exc:
            problems.append((f"{where}/tsField", str(exc)))
    if len(compiled) < 2:
        return None
    key: Template = compiled["key"]
    value: Template = compiled["value"]
    constant_key = key.render({}) if key.is_constant else None
    return _Point(key, value, kind, ts, caster(kind), constant_key, value.single_key)


def _compile_points(
    points: tuple[DataPointConfig, ...], where: str, problems: list[tuple[str, str]]
) -> list[_Point]:
    compiled = (_compile_point(p, f"{where}/{i}", problems) for i, p in enumerate(points))
    return [p for p in compiled if p is not None]


def _device_template(text: str, source: str, where: str, problems: list[tuple[str, str]]) -> Template:
    if source == "constant":
        return constant(text)
    try:
        return compile_template(text)
    except ExpressionError as exc:
        problems.append((where, str(exc)))
        return constant(text)


def check_config(config: ConverterConfig) -> list[tuple[str, str]]:
    """Every problem with a json converter config as (JSON pointer in the section, message); [] if fine."""
    try:
        _Compiled(config)
    except ConverterConfigError as exc:
        return exc.problems
    return []


class _Compiled:
    """All templates of one converter config, compiled; raises ConverterConfigError with every problem."""

    def __init__(self, config: ConverterConfig) -> None:
        problems: list[tuple[str, str]] = []
        if not config.device_name_expression.strip():
            problems.append((config.pointer("device_name"), "a device name expression is required"))
        self.name = _device_template(
            config.device_name_expression, config.device_name_source, config.pointer("device_name"), problems
        )
        self.type = _device_template(
            config.device_type_expression or "default",
            config.device_type_source,
            config.pointer("device_type"),
            problems,
        )
        self.attributes = _compile_points(config.attributes, "/attributes", problems)
        self.timeseries = _compile_points(config.timeseries, "/timeseries", problems)
        if problems:
            raise ConverterConfigError(problems)


class JsonConverter(Converter):
    """Converts a JSON object (or form fields) with the mapping's templates; see the module docstring.

    ``now_ms`` is the clock used for the receive time of messages without a timestamp; tests
    replace it (``converter.now_ms = lambda: 1700000000000``).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | ConverterConfig,
        logger: logging.Logger | None = None,
        *,
        now_ms: Callable[[], int] = now_ms,
    ) -> None:
        parsed = config if isinstance(config, ConverterConfig) else ConverterConfig.from_dict(config)
        super().__init__(parsed.raw, logger)
        self.converter_config = parsed
        self.now_ms = now_ms
        self._compiled = _Compiled(parsed)

    def convert(self, config: Any, data: RequestData) -> ConvertedData:
        """Convert one message; ``config`` is ignored (the templates were compiled at construction)."""
        data = _as_object(data)
        compiled = self._compiled
        skipped: list[SkippedValue] = []
        try:
            name = _text(compiled.name.render(data))
        except MissingValue as exc:
            raise ConversionError(
                f"device name: ${{{exc.expression}}} not found in the request "
                f"(deviceNameExpression {compiled.name.text!r})"
            ) from None
        except CastError as exc:
            raise ConversionError(f"device name: {exc}") from None
        if not name.strip():
            raise ConversionError(f"device name is empty (deviceNameExpression {compiled.name.text!r})")
        try:
            device_type = _text(compiled.type.render(data)) or "default"
        except MissingValue as exc:
            device_type = "default"
            reason = f"${{{exc.expression}}} not found; \"default\" was used"
            skipped.append(SkippedValue("deviceType", reason))
        except CastError as exc:
            raise ConversionError(f"device type: {exc}") from None
        result = ConvertedData(device_name=name, device_type=device_type, skipped=skipped)
        for point in compiled.attributes:
            item = _resolve(point, data, skipped)
            if item is not None:
                result.attributes[item[0]] = item[1]
        if compiled.timeseries:
            self._add_telemetry(result, data, skipped)
        return result

    def _add_telemetry(
        self, result: ConvertedData, data: dict[str, Any], skipped: list[SkippedValue]
    ) -> None:
        received = self.now_ms()
        ts, warning = message_timestamp(data, received)
        if warning is not None:
            skipped.append(warning)
        values: dict[str, Any] = {}
        own: list[tuple[int, str, Any]] = []
        for point in self._compiled.timeseries:
            item = _resolve(point, data, skipped)
            if item is None:
                continue
            entry_ts = None if point.ts is None else _point_ts(point, item[0], data, skipped)
            if entry_ts is None:
                values[item[0]] = item[1]
            else:
                own.append((entry_ts, item[0], item[1]))
        result.add_telemetry(values, ts)
        for entry_ts, key, value in own:
            result.add_telemetry({key: value}, entry_ts)


def _as_object(data: RequestData) -> dict[str, Any]:
    if isinstance(data, bytes | bytearray):
        try:
            data = json.loads(bytes(data).decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ConversionError(
                "body is not JSON: the json converter needs a JSON object or form fields"
            ) from None
    if not isinstance(data, Mapping):
        raise ConversionError(f"expected a JSON object, got {_json_kind(data)}")
    return data  # type: ignore[return-value]


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, dict | list):
        raise CastError(f"expected text, got a JSON {'object' if isinstance(value, dict) else 'array'}")
    return to_text(value)


def _resolve(point: _Point, data: dict[str, Any], skipped: list[SkippedValue]) -> tuple[str, Any] | None:
    """(key, typed value) of one datapoint, or None when it is left out (skips recorded)."""
    key = point.constant_key
    if key and point.value_key is not None and type(data) is dict:  # fast path: "temp": "${temp}"
        raw = data.get(point.value_key)
        if raw is not None:
            try:
                return key, point.cast(raw)
            except CastError as exc:
                skipped.append(SkippedValue(key, f"not a valid {point.type}: {exc}"))
                return None
    if key is None:
        try:
            key = _text(point.key.render(data))
        except MissingValue:
            return None
        except CastError as exc:
            skipped.append(SkippedValue(point.key.text, f"key: {exc}"))
            return None
    try:
        raw = point.value.render(data)
    except MissingValue:
        return None
    except CastError as exc:
        skipped.append(SkippedValue(key, str(exc)))
        return None
    if not key:
        skipped.append(SkippedValue(point.key.text, "key is empty"))
        return None
    try:
        return key, point.cast(raw)
    except CastError as exc:
        skipped.append(SkippedValue(key, f"not a valid {point.type}: {exc}"))
        return None


def _point_ts(point: _Point, key: str, data: dict[str, Any], skipped: list[SkippedValue]) -> int | None:
    if point.ts is None:
        return None
    try:
        return parse_timestamp(point.ts.render(data))
    except MissingValue:
        return None
    except TimestampError as exc:
        reason = f"tsField {point.ts.text} of {key}: {exc}; the message time was used"
        skipped.append(SkippedValue("ts", reason))
        return None
