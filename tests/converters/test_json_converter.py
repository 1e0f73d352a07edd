"""JsonConverter details the golden cases cannot express: bytes input, non-object data, config forms."""

from __future__ import annotations

import threading

import pytest

from converters.base import ConversionError
from converters.config import ConverterConfig, ConverterConfigError
from converters.json_converter import JsonConverter

SECTION = {
    "deviceNameExpression": "${id}",
    "timeseries": [{"type": "double", "key": "t", "value": "${t}"}],
}


def make() -> JsonConverter:
    return JsonConverter(SECTION, now_ms=lambda: 1000)


def test_accepts_a_dict_or_a_converter_config() -> None:
    from_dict = make()
    from_config = JsonConverter(ConverterConfig.from_dict(SECTION), now_ms=lambda: 1000)
    assert from_dict.convert({}, {"id": "A", "t": 1}) == from_config.convert(None, {"id": "A", "t": 1})
    assert from_dict.config == SECTION


def test_config_argument_of_convert_is_ignored() -> None:
    converter = make()
    other = {"deviceNameExpression": "${other}"}
    assert converter.convert(other, {"id": "A", "t": 2}).device_name == "A"


def test_non_json_bytes_are_rejected() -> None:
    with pytest.raises(ConversionError, match="body is not JSON"):
        make().convert({}, b"temp=1&hum=2")
    with pytest.raises(ConversionError, match="body is not JSON"):
        make().convert({}, b"\xff\xfe")


def test_json_bytes_are_parsed() -> None:
    assert make().convert({}, b'{"id": "B", "t": "2"}').to_record()["telemetry"] == [
        {"ts": 1000, "values": {"t": 2.0}}
    ]


@pytest.mark.parametrize(
    ("data", "kind"), [([1], "an array"), ("x", "a string"), (None, "null"), (True, "a boolean")]
)
def test_non_object_data_is_rejected(data: object, kind: str) -> None:
    with pytest.raises(ConversionError, match=f"expected a JSON object, got {kind}"):
        make().convert({}, data)  # type: ignore[arg-type]


def test_object_as_device_name_is_rejected() -> None:
    with pytest.raises(ConversionError, match="device name: expected text, got a JSON object"):
        make().convert({}, {"id": {"a": 1}})


def test_numeric_device_name_becomes_text() -> None:
    assert make().convert({}, {"id": 42}).device_name == "42"


def test_bad_config_raises_with_every_problem() -> None:
    with pytest.raises(ConverterConfigError) as info:
        JsonConverter({"attributes": [{"key": "k", "value": "${v", "type": "nope"}]})
    assert [p for p, _ in info.value.problems] == [
        "/deviceNameExpression",
        "/attributes/0/value",
        "/attributes/0/type",
    ]


def test_object_key_is_skipped_with_reason() -> None:
    converter = JsonConverter(
        {"deviceNameExpression": "${id}", "attributes": [{"key": "${k}", "value": "v"}]}
    )
    data = converter.convert({}, {"id": "A", "k": [1]})
    assert data.attributes == {} and data.skipped[0].key == "${k}" and "array" in data.skipped[0].reason


def test_concurrent_conversions_do_not_share_state() -> None:
    converter = make()
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(200):
            result = converter.convert({}, {"id": f"D{n}", "t": i})
            if result.device_name != f"D{n}" or result.telemetry[0].values != {"t": float(i)}:
                errors.append(f"{n}/{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
