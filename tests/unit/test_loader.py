"""Unit tests for the converter loader: search order, dotted paths, import-once, clear errors."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest

from converters.base import Converter
from converters.config import ConverterConfig
from converters.json_converter import JsonConverter
from converters.loader import ConverterLoadError, find_converter_class, load_converter

REPO_EXTENSIONS = str(Path(__file__).resolve().parents[2] / "extensions")

COUNTING_MODULE = """
from pathlib import Path
from converters.base import Converter

Path(__file__).with_suffix(".imports").open("a").write("imported\\n")

class {name}(Converter):
    def convert(self, config, data):
        return None

class {name}Two(Converter):
    def convert(self, config, data):
        return None
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def section(**extra: object) -> ConverterConfig:
    return ConverterConfig.from_dict({"type": "custom", "deviceNameExpression": "${id}", **extra})


def test_missing_class_message_names_the_class_and_every_place(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    with pytest.raises(ConverterLoadError) as info:
        find_converter_class("NoSuchConverter", [str(first), str(second)])
    message = str(info.value)
    assert "'NoSuchConverter' not found" in message
    for place in (first / "rest", first, second / "rest", second):
        assert str(place) in message


def test_no_folders_configured_is_said(tmp_path: Path) -> None:
    with pytest.raises(ConverterLoadError, match="no extension folders are configured"):
        find_converter_class("Missing", [])


def test_module_imported_once_for_many_lookups(tmp_path: Path) -> None:
    module = write(tmp_path / "ext" / "counted.py", COUNTING_MODULE.format(name="Counted"))
    folders = [str(tmp_path / "ext")]
    first = find_converter_class("Counted", folders)
    assert find_converter_class("Counted", folders) is first
    assert find_converter_class("CountedTwo", folders).__name__ == "CountedTwo"
    load_converter(section(extension="Counted"), folders)
    load_converter(section(extension="Counted"), folders)
    assert module.with_suffix(".imports").read_text().splitlines() == ["imported"]


def test_unrelated_modules_are_not_executed(tmp_path: Path) -> None:
    folder = tmp_path / "ext"
    write(folder / "a_broken.py", "raise RuntimeError('must not run')\n")
    write(folder / "good.py", COUNTING_MODULE.format(name="Good"))
    assert find_converter_class("Good", [str(folder)]).__name__ == "Good"


def test_rest_subfolder_is_searched_before_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ext"
    write(
        folder / "plain.py",
        "from converters.base import Converter\nclass Twin(Converter):\n    where = 'plain'\n"
        "    def convert(self, config, data): return None\n",
    )
    write(
        folder / "rest" / "sub.py",
        "from converters.base import Converter\nclass Twin(Converter):\n    where = 'rest'\n"
        "    def convert(self, config, data): return None\n",
    )
    assert find_converter_class("Twin", [str(folder)]).where == "rest"


def test_earlier_search_path_wins(tmp_path: Path) -> None:
    for name in ("first", "second"):
        write(
            tmp_path / name / "m.py",
            "from converters.base import Converter\nclass Order(Converter):\n"
            f"    where = {name!r}\n    def convert(self, config, data): return None\n",
        )
    cls = find_converter_class("Order", [str(tmp_path / "first"), str(tmp_path / "second")])
    assert cls.where == "first"


def test_dotted_name_is_not_imported_from_sys_path() -> None:
    # custom code loads only from the extension folders (issue #4); the repo root is on sys.path
    with pytest.raises(ConverterLoadError, match="not found"):
        find_converter_class("extensions.custom_converter.CustomConverter", [])
    cls = find_converter_class("custom_converter.CustomConverter", [REPO_EXTENSIONS])
    assert cls.__name__ == "CustomConverter"


def test_dotted_name_can_name_a_file_in_an_extension_folder(tmp_path: Path) -> None:
    write(tmp_path / "ext" / "pkg" / "my_file.py", COUNTING_MODULE.format(name="InFile"))
    cls = find_converter_class("pkg.my_file.InFile", [str(tmp_path / "ext")])
    assert cls.__name__ == "InFile"


def test_import_failure_is_reported_with_the_file(tmp_path: Path) -> None:
    write(tmp_path / "ext" / "bad.py", "import does_not_exist_anywhere\nclass Broken: pass\n")
    with pytest.raises(ConverterLoadError) as info:
        find_converter_class("Broken", [str(tmp_path / "ext")])
    message = str(info.value)
    assert "bad.py" in message and "does_not_exist_anywhere" in message


def test_class_must_look_like_a_converter(tmp_path: Path) -> None:
    write(tmp_path / "ext" / "notconv.py", "class NotAConverter:\n    pass\n")
    with pytest.raises(ConverterLoadError, match="is not a converter"):
        find_converter_class("NotAConverter", [str(tmp_path / "ext")])


def test_invalid_name() -> None:
    with pytest.raises(ConverterLoadError, match="not a class name"):
        find_converter_class("bad name!", [])


def test_instantiated_with_raw_config_and_logger(tmp_path: Path) -> None:
    write(tmp_path / "ext" / "two.py", COUNTING_MODULE.format(name="TwoArgs"))
    logger = logging.getLogger("test.loader")
    converter = load_converter(
        section(extension="TwoArgs", extensionConfig={"k": 1}), [str(tmp_path / "ext")], logger
    )
    assert isinstance(converter, Converter)
    assert converter.config["extensionConfig"] == {"k": 1} and converter.config["extension"] == "TwoArgs"
    assert converter.log is logger


def test_one_argument_constructor_is_supported(tmp_path: Path) -> None:
    write(
        tmp_path / "ext" / "one.py",
        """
        class OneArg:
            def __init__(self, config):
                self.config = config
            def convert(self, config, data):
                return None
        """,
    )
    converter = load_converter(section(extension="OneArg"), [str(tmp_path / "ext")])
    assert converter.config["extension"] == "OneArg"


def test_failing_constructor_is_a_load_error(tmp_path: Path) -> None:
    write(
        tmp_path / "ext" / "boom.py",
        """
        from converters.base import Converter
        class Boom(Converter):
            def __init__(self, config, logger=None):
                raise KeyError("needs extensionConfig.url")
            def convert(self, config, data):
                return None
        """,
    )
    with pytest.raises(
        ConverterLoadError, match="Boom failed to start: KeyError: 'needs extensionConfig.url'"
    ):
        load_converter(section(extension="Boom"), [str(tmp_path / "ext")])


def test_json_type_gives_the_json_converter() -> None:
    converter = load_converter(ConverterConfig.from_dict({"deviceNameExpression": "${id}"}), [])
    assert isinstance(converter, JsonConverter)
    reference_name = ConverterConfig.from_dict(
        {"deviceNameExpression": "${id}", "extension": "JsonRESTUplinkConverter"}
    )
    assert isinstance(load_converter(reference_name, []), JsonConverter)


def test_custom_without_extension_is_an_error() -> None:
    with pytest.raises(ConverterLoadError, match='"custom" needs "extension"'):
        load_converter(section(), [REPO_EXTENSIONS])


def test_unknown_converter_type() -> None:
    with pytest.raises(ConverterLoadError, match="type 'xml' is unknown"):
        load_converter(section(type="xml"), [])


def test_json_type_with_extension_uses_the_extension_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    config = ConverterConfig.from_dict(
        {"type": "json", "extension": "CustomConverter", "deviceNameExpression": "Device 2"}
    )
    with caplog.at_level(logging.WARNING):
        converter = load_converter(config, [REPO_EXTENSIONS])
    assert type(converter).__name__ == "CustomConverter"
    assert "using the extension" in caplog.text


def test_invalid_json_config_is_a_load_error() -> None:
    with pytest.raises(
        ConverterLoadError, match="/deviceNameExpression: a device name expression is required"
    ):
        load_converter(ConverterConfig.from_dict({"type": "json"}), [])


def test_bundled_custom_converter_loads_from_the_repo_extensions_folder() -> None:
    cls = find_converter_class("CustomConverter", [REPO_EXTENSIONS])
    assert issubclass(cls, Converter)
    assert cls.__module__ in sys.modules
