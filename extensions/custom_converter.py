"""Example custom converter (used by the shipped ``/anon1`` endpoint): temp/hum readings to telemetry.

A short model for plugin authors; docs/custom-converters.md walks through it. Loaded by name::

    "converter": {"type": "custom", "extension": "CustomConverter",
                  "deviceNameExpression": "Device 2", "deviceTypeExpression": "default",
                  "attributes": [{"type": "string", "key": "model", "value": "Model2"}]}
"""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from converters.base import ConversionError, Converter, RequestData
from converters.casting import CastError, cast
from converters.config import ConverterConfig
from converters.expressions import MissingValue, compile_template
from converters.model import ConvertedData, SkippedValue
from converters.timestamps import message_timestamp, now_ms

# Request field -> telemetry key. Values arrive as numbers (JSON) or text (forms, query strings).
FIELDS = {"temp": "temperature", "hum": "humidity"}


class CustomConverter(Converter):
    """Sends ``temp`` and ``hum`` as double telemetry, with the configured device and attributes."""

    def __init__(self, config: dict[str, Any], logger: logging.Logger | None = None) -> None:
        super().__init__(config, logger)
        # Do all the config work once, here: convert() runs for every request, on many threads.
        section = ConverterConfig.from_dict(config)  # reads either rest.json format
        self.device_name = compile_template(section.device_name_expression or "Device 2")
        self.device_type = compile_template(section.device_type_expression or "default")
        self.attributes = [(compile_template(a.key), compile_template(a.value)) for a in section.attributes]
        self.now_ms = now_ms  # the clock; tests may replace it

    def convert(self, config: dict[str, Any], data: RequestData) -> ConvertedData:
        if isinstance(data, bytes):  # a body that was neither JSON nor a form reaches us raw
            data = self._parse_raw(data)
        try:
            result = ConvertedData(
                device_name=str(self.device_name.render(data)),
                device_type=str(self.device_type.render(data)),
            )
        except MissingValue as exc:  # -> the device gets a 400 naming what is missing
            raise ConversionError(f"device name or type: {exc}") from None
        for key, value in self.attributes:
            k, v = key.render_or(data), value.render_or(data)  # None when a ${...} is missing
            if k is not None and v is not None:
                result.attributes[str(k)] = v

        values: dict[str, float] = {}
        for field, key in FIELDS.items():
            if data.get(field) is None:
                continue  # absent: leave the key out
            try:
                values[key] = cast(data[field], "double")  # "21.5" -> 21.5, 40 -> 40.0
            except CastError as exc:
                result.skipped.append(SkippedValue(key, str(exc)))  # reported to the device
        ts, warning = message_timestamp(data, self.now_ms())  # payload ts/timestamp, else now
        if warning:
            result.skipped.append(warning)
        result.add_telemetry(values, ts)
        return result

    @staticmethod
    def _parse_raw(body: bytes) -> dict[str, Any]:
        """Accept JSON bytes or ``temp=21.5&hum=40`` text; anything else is a bad request."""
        text = body.decode("utf-8", errors="replace").strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = dict(parse_qsl(text, keep_blank_values=True))
        except RecursionError:  # [[[[...]]]]: json gives up on deep nesting this way, not ValueError
            raise ConversionError("JSON nested too deeply: expected a flat JSON object") from None
        if not isinstance(parsed, dict) or not parsed:
            raise ConversionError("expected a JSON object or temp=..&hum=.. fields")
        return parsed
