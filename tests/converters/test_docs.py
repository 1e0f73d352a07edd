"""Every JSON example in docs/custom-converters.md parses, and every converter section in it loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from converters.config import ConverterConfig
from converters.loader import load_converter

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "custom-converters.md"


def json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_json_examples_parse_and_converters_load(tmp_path: Path) -> None:
    blocks = json_blocks()
    assert len(blocks) >= 2
    folder = tmp_path / "ext"
    folder.mkdir()
    (folder / "mine.py").write_text(
        "from converters.base import Converter\n"
        "class MyConverter(Converter):\n"
        "    def convert(self, config, data):\n"
        "        return None\n",
        encoding="utf-8",
    )
    loaded = 0
    for block in blocks:
        text = block.strip()
        document = json.loads(text if text.startswith("{") else "{" + text + "}")
        section = document.get("converter")
        if section is None:
            continue
        converter = load_converter(
            ConverterConfig.from_dict(section), [str(folder), str(ROOT / "extensions")]
        )
        assert callable(converter.convert)
        loaded += 1
    assert loaded >= 2


def test_the_anon1_example_behaves_as_documented() -> None:
    mapping = json.loads(json_blocks()[-1])
    section = mapping["converter"]
    converter = load_converter(ConverterConfig.from_dict(section), [str(ROOT / "extensions")])
    converter.now_ms = lambda: 1000
    record = converter.convert(section, {"temp": "21.5", "hum": "40"}).to_record()
    assert record["device"] == "Device 2" and record["attributes"] == {"model": "Model2"}
    assert record["telemetry"][0]["values"] == {"temperature": 21.5, "humidity": 40.0}
