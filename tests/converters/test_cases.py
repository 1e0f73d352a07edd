"""Golden converter cases: every folder under cases/ is one converter config, request and expected result.

Each ``cases/<name>/`` holds ``converter.json`` (a mapping's converter section), ``request.json``
(one message dict, or a list of messages each converted on its own) and either
``expected.json`` (the list of records, ``ConvertedData.to_record()`` plus ``skipped`` when not
empty) or ``expected.err`` (text the load or conversion error must contain). The receive time is
fixed at ``NOW`` so messages without a timestamp are reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from converters.base import ConversionError
from converters.config import ConverterConfig, ConverterConfigError
from converters.legacy import normalize_result
from converters.loader import ConverterLoadError, load_converter

HERE = Path(__file__).parent
CASES = sorted(p for p in (HERE / "cases").iterdir() if p.is_dir())
SEARCH_PATHS = [str(HERE / "extensions"), str(HERE.parent.parent / "extensions")]
NOW = 1_700_000_000_123


def run_case(folder: Path) -> list[dict[str, Any]]:
    """Convert the case's request(s); returns the records, raises the load/conversion error."""
    section = json.loads((folder / "converter.json").read_text(encoding="utf-8"))
    converter = load_converter(ConverterConfig.from_dict(section), SEARCH_PATHS)
    if hasattr(converter, "now_ms"):
        converter.now_ms = lambda: NOW
    request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
    messages = request if isinstance(request, list) else [request]
    records = []
    for message in messages:
        result = converter.convert(section, message)
        for data in normalize_result(result, type(converter).__name__, now_ms=lambda: NOW):
            record = data.to_record()
            if data.skipped:
                record["skipped"] = [s.to_json() for s in data.skipped]
            records.append(record)
    return records


def test_there_are_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("folder", CASES, ids=[c.name for c in CASES])
def test_case(folder: Path) -> None:
    expected_json = folder / "expected.json"
    expected_err = folder / "expected.err"
    assert expected_json.exists() != expected_err.exists(), "a case needs exactly one expected.* file"
    if expected_err.exists():
        with pytest.raises((ConversionError, ConverterLoadError, ConverterConfigError)) as info:
            run_case(folder)
        assert expected_err.read_text(encoding="utf-8").strip() in str(info.value)
    else:
        assert run_case(folder) == json.loads(expected_json.read_text(encoding="utf-8"))
