"""Finds and builds a mapping's converter: the built-in json converter or a custom class, once, at load.

Search order for ``"extension": "<name>"``: each folder of ``search_paths`` in order (the daemon
passes the configured extension folders, then the bundled ``extensions/`` folder); within each
folder its ``rest/`` subfolder first, then the folder itself. A plain name is looked for in the
``*.py`` files there that mention it; a dotted name ``file.Class`` (or ``sub.file.Class``) names
the file.

Nothing outside those places is searched or imported -- not ``sys.path`` either -- so custom code
loads only from the configured extension directories (a file there may import an installed
package). Each file is imported at most once per process (a failed import is
remembered too), never once per lookup. The class must subclass
:class:`~converters.base.Converter` or at least have a callable ``convert``; it is instantiated
once with ``(raw_config, logger)``, or ``(raw_config)`` when its constructor takes one argument.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from converters.base import Converter
from converters.config import ConverterConfig, ConverterConfigError
from converters.json_converter import JsonConverter

log = logging.getLogger("converters.loader")

# Class names of the reference gateway's built-in JSON converter, accepted as "use the json converter".
BUILTIN_JSON_NAMES = frozenset({"JsonConverter", "JsonRESTUplinkConverter"})

_modules: dict[Path, ModuleType | BaseException] = {}
_lock = threading.RLock()


class ConverterLoadError(Exception):
    """A converter cannot be found or built; the message names the class and every place searched."""


def _load_file(path: Path) -> ModuleType | BaseException:
    """Import one extension file, once; returns the module or the exception its import raised."""
    with _lock:
        if path in _modules:
            return _modules[path]
        digest = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:10]
        stem = re.sub(r"\W", "_", path.stem)
        name = f"rest_gateway_extensions.{stem}_{digest}"
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            result: ModuleType | BaseException = module
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
            result = exc
        _modules[path] = result
        return result


def _mentions(path: Path, word: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def _folders(search_paths: Sequence[str]) -> list[Path]:
    places: list[Path] = []
    for folder in search_paths:
        base = Path(folder).expanduser()
        places.extend((base / "rest", base))
    return places


def _check_class(candidate: Any, name: str, where: str) -> type:
    if not inspect.isclass(candidate):
        raise ConverterLoadError(f"{name} in {where} is a {type(candidate).__name__}, not a class")
    if not issubclass(candidate, Converter) and not callable(getattr(candidate, "convert", None)):
        raise ConverterLoadError(
            f"{name} in {where} is not a converter: subclass converters.base.Converter "
            "or define a convert(config, data) method"
        )
    return candidate


def find_converter_class(name: str, search_paths: Sequence[str]) -> type:
    """The converter class called ``name``; ConverterLoadError naming every place searched if absent.

    Importing is done here (once per file); nothing is instantiated.
    """
    name = name.strip()
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ConverterLoadError(f"extension {name!r} is not a class name or a dotted module.Class path")
    searched: list[str] = []
    failures: list[str] = []
    module_part, _, class_name = name.rpartition(".")
    for folder in _folders(search_paths):
        if module_part:
            files = [folder.joinpath(*module_part.split(".")).with_suffix(".py")]
        else:
            files = sorted(folder.glob("*.py")) if folder.is_dir() else []
        searched.append(str(folder))
        for path in files:
            if not path.is_file() or not _mentions(path, class_name):
                continue
            module = _load_file(path.resolve())
            if isinstance(module, BaseException):
                failures.append(f"{path}: {type(module).__name__}: {module}")
                continue
            if inspect.isclass(getattr(module, class_name, None)):
                return _check_class(getattr(module, class_name), class_name, str(path))
    message = f"converter class {name!r} not found; searched: {', '.join(searched) or 'nowhere'}"
    if not search_paths:
        message += " (no extension folders are configured)"
    if failures:
        message += "; import failures: " + "; ".join(failures)
    raise ConverterLoadError(message)


def _instantiate(cls: type, raw: dict[str, Any], logger: logging.Logger) -> Any:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    args: tuple[Any, ...] = (raw, logger)
    if signature is not None:
        try:
            signature.bind(raw, logger)
        except TypeError:
            args = (raw,)
    try:
        return cls(*args)
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
        reason = f"{type(exc).__name__}: {exc}"
        raise ConverterLoadError(f"converter {cls.__name__} failed to start: {reason}") from exc


def load_converter(
    config: ConverterConfig, search_paths: Sequence[str], logger: logging.Logger | None = None
) -> Converter:
    """Build the converter a mapping's ``converter`` section asks for (once, at load time).

    ``type: json`` (the default) without ``extension`` gives :class:`JsonConverter`;
    ``type: custom`` needs ``extension``; ``type: json`` with an ``extension`` uses the extension
    (the reference gateway does the same) and logs a warning. Raises :class:`ConverterLoadError`.
    """
    extension = config.extension
    if config.type not in ("json", "custom"):
        raise ConverterLoadError(f"converter type {config.type!r} is unknown (expected json or custom)")
    if config.type == "custom" and not extension:
        raise ConverterLoadError('converter type "custom" needs "extension": the converter class name')
    if extension and config.type == "json" and extension not in BUILTIN_JSON_NAMES:
        (logger or log).warning(
            'converter type is "json" but extension %r is set; using the extension', extension
        )
    if not extension or extension in BUILTIN_JSON_NAMES:
        try:
            return JsonConverter(config, logger)
        except ConverterConfigError as exc:
            raise ConverterLoadError(f"json converter config is invalid: {exc}") from None
    cls = find_converter_class(extension, search_paths)
    child = logger or logging.getLogger(f"converters.{cls.__name__}")
    return _instantiate(cls, dict(config.raw), child)
