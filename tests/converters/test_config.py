"""ConverterConfig.from_dict: both rest.json converter formats, defaults and every structural problem."""

from __future__ import annotations

import pytest

from converters.config import ConverterConfig, ConverterConfigError, DataPointConfig
from converters.json_converter import check_config


def test_legacy_format() -> None:
    config = ConverterConfig.from_dict(
        {
            "type": "json",
            "deviceNameExpression": "${sensorName}",
            "deviceTypeExpression": "${sensorType}",
            "attributes": [{"type": "string", "key": "model", "value": "${sensorModel}"}],
            "timeseries": [{"type": "double", "key": "temperature", "value": "${temp}", "tsField": "${t}"}],
        }
    )
    assert config.type == "json"
    assert (config.device_name_expression, config.device_name_source) == ("${sensorName}", "request")
    assert (config.device_type_expression, config.device_type_source) == ("${sensorType}", "request")
    assert config.attributes == (DataPointConfig("model", "${sensorModel}", "string"),)
    assert config.timeseries == (DataPointConfig("temperature", "${temp}", "double", "${t}"),)
    assert config.pointer("device_name") == "/deviceNameExpression"
    assert config.pointer("device_type") == "/deviceTypeExpression"


def test_current_format() -> None:
    raw = {
        "type": "custom",
        "extension": " MyConverter ",
        "deviceInfo": {
            "deviceNameExpressionSource": "constant",
            "deviceNameExpression": "Gate ${x}",
            "deviceProfileExpressionSource": "REQUEST",
            "deviceProfileExpression": "${profile}",
        },
        "extensionConfig": {"url": "http://x"},
    }
    config = ConverterConfig.from_dict(raw)
    assert config.type == "custom" and config.extension == "MyConverter"
    assert (config.device_name_expression, config.device_name_source) == ("Gate ${x}", "constant")
    assert (config.device_type_expression, config.device_type_source) == ("${profile}", "request")
    assert config.extension_config == {"url": "http://x"}
    assert config.raw == raw and config.raw is not raw
    assert config.pointer("device_name") == "/deviceInfo/deviceNameExpression"
    assert config.pointer("device_type") == "/deviceInfo/deviceProfileExpression"


def test_defaults() -> None:
    config = ConverterConfig.from_dict({"extension-config": {"a": 1}})
    assert config.type == "json" and config.device_name_expression == ""
    assert config.device_type_expression == "default" and config.extension is None
    assert config.extension_config == {"a": 1}
    point = ConverterConfig.from_dict({"attributes": [{"key": "k", "value": 5}]}).attributes[0]
    assert point == DataPointConfig("k", "5", "string")


def test_all_structural_problems_are_reported_at_once() -> None:
    with pytest.raises(ConverterConfigError) as info:
        ConverterConfig.from_dict(
            {
                "type": 3,
                "deviceInfo": {"deviceNameExpression": ["x"], "deviceNameExpressionSource": "sometimes"},
                "attributes": {"key": "k"},
                "timeseries": [{"key": "t"}, "text", {"key": "u", "value": "${u}", "type": 5}],
                "extensionConfig": [],
            }
        )
    pointers = sorted(p for p, _ in info.value.problems)
    assert pointers == sorted(
        [
            "/deviceInfo/deviceNameExpression",
            "/deviceInfo/deviceNameExpressionSource",
            "/type",
            "/extensionConfig",
            "/attributes",
            "/timeseries/0/value",
            "/timeseries/1",
            "/timeseries/2/type",
        ]
    )
    assert "must be one of request, constant, got 'sometimes'" in str(info.value)


def test_not_an_object() -> None:
    with pytest.raises(ConverterConfigError, match="must be an object, got list"):
        ConverterConfig.from_dict([])  # type: ignore[arg-type]


def test_check_config_lists_expression_and_type_problems() -> None:
    config = ConverterConfig.from_dict(
        {
            "deviceNameExpression": "${a..}",
            "attributes": [{"key": "${k", "value": "${v}", "type": "decimal"}],
            "timeseries": [{"key": "t", "value": "${t}", "tsField": "${$.}"}],
        }
    )
    problems = check_config(config)
    assert [p for p, _ in problems] == [
        "/deviceNameExpression",
        "/attributes/0/key",
        "/attributes/0/type",
        "/timeseries/0/tsField",
    ]
    assert check_config(ConverterConfig.from_dict({"deviceNameExpression": "${id}"})) == []
