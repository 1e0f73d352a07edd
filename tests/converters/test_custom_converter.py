"""The bundled CustomConverter example (the /anon1 endpoint): dict, form text and JSON bytes input."""

from __future__ import annotations

import pytest

from converters.base import ConversionError
from extensions.custom_converter import CustomConverter

LEGACY = {
    "type": "custom",
    "extension": "CustomConverter",
    "deviceNameExpression": "Device 2",
    "deviceTypeExpression": "default",
    "attributes": [{"type": "string", "key": "model", "value": "Model2"}],
}
CURRENT = {
    "type": "custom",
    "extension": "CustomConverter",
    "deviceInfo": {"deviceNameExpression": "Meter ${id}", "deviceProfileExpression": "meters"},
}


def make(section: dict) -> CustomConverter:
    converter = CustomConverter(section)
    converter.now_ms = lambda: 1000
    return converter


@pytest.mark.parametrize(
    "data", [{"temp": "21.5", "hum": "40"}, b"temp=21.5&hum=40", b'{"temp": 21.5, "hum": 40}']
)
def test_reads_temp_and_hum_from_any_input(data: object) -> None:
    assert make(LEGACY).convert(LEGACY, data).to_record() == {  # type: ignore[arg-type]
        "device": "Device 2",
        "type": "default",
        "attributes": {"model": "Model2"},
        "telemetry": [{"ts": 1000, "values": {"temperature": 21.5, "humidity": 40.0}}],
    }


def test_current_format_and_templates() -> None:
    record = make(CURRENT).convert(CURRENT, {"id": 3, "temp": 1}).to_record()
    assert record == {
        "device": "Meter 3",
        "type": "meters",
        "telemetry": [{"ts": 1000, "values": {"temperature": 1.0}}],
    }


def test_missing_name_field_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match=r"\$\{id\} not found"):
        make(CURRENT).convert(CURRENT, {"temp": 1})


@pytest.mark.parametrize("body", [b"[1, 2]", b"", b"   "])
def test_unusable_raw_body_is_a_conversion_error(body: bytes) -> None:
    with pytest.raises(ConversionError, match="expected a JSON object"):
        make(LEGACY).convert(LEGACY, body)


def test_deeply_nested_raw_json_is_a_conversion_error_not_a_crash() -> None:
    """Found by tests/fuzz/test_http_daemon.py: json.loads raises RecursionError, not ValueError."""
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ConversionError, match="nested too deeply"):
        make(LEGACY).convert(LEGACY, body)
