"""A converter's config model: the ``converter`` section of a mapping, normalised from either format."""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DataPointConfig:
    """One configured attribute or timeseries entry."""

    key: str  # an expression: may contain ${...}
    value: str  # an expression
    type: str = "string"
    ts_field: str | None = None


@dataclass(frozen=True, slots=True)
class ConverterConfig:
    """A mapping's converter section, whichever rest.json format it was written in."""

    type: str  # "json" | "custom"
    device_name_expression: str
    device_name_source: str = "request"  # "request" | "constant"
    device_type_expression: str = "default"
    device_type_source: str = "request"
    attributes: tuple[DataPointConfig, ...] = ()
    timeseries: tuple[DataPointConfig, ...] = ()
    extension: str | None = None
    extension_config: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the section as written, for custom converters

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> ConverterConfig:
        """Normalise a rest.json ``converter`` section written in either format.

        Legacy (rest-connector.md): ``deviceNameExpression`` / ``deviceTypeExpression`` at the top
        level. Current (gateway 3.7.2+): ``deviceInfo`` with ``deviceNameExpression``,
        ``deviceNameExpressionSource``, ``deviceProfileExpression`` and
        ``deviceProfileExpressionSource``. Source ``constant`` means the text is used verbatim even
        if it contains ``${``; ``request`` (the default) means it is a template. ``type`` defaults
        to ``json``; ``extension-config`` is read as ``extensionConfig``. Raises
        :class:`ConverterConfigError` listing every structural problem (JSON pointers relative to
        the section); expression syntax is checked by the converter that compiles them.
        """
        problems: list[tuple[str, str]] = []
        if not isinstance(section, Mapping):
            raise ConverterConfigError([("", f"a converter section must be an object, got {_kind(section)}")])
        info = section.get("deviceInfo")
        if info is not None and not isinstance(info, Mapping):
            problems.append(("/deviceInfo", f"must be an object, got {_kind(info)}"))
            info = None
        where = "/deviceInfo/" if info is not None else "/"
        scope: Mapping[str, Any] = info if info is not None else section

        def text(key: str, default: str, *aliases: str) -> str:
            for name in (key, *aliases):
                value = scope.get(name, section.get(name))
                if value is None:
                    continue
                if isinstance(value, str):
                    return value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return str(value)
                problems.append((where + name, f"must be a string, got {_kind(value)}"))
                return default
            return default

        def source(key: str) -> str:
            value = text(key, "request").strip().lower()
            if value not in SOURCES:
                problems.append((where + key, f"must be one of {', '.join(SOURCES)}, got {value!r}"))
                return "request"
            return value

        conv_type = section.get("type", "json")
        if not isinstance(conv_type, str):
            problems.append(("/type", f"must be a string, got {_kind(conv_type)}"))
            conv_type = "json"
        extension = section.get("extension")
        if extension is not None and not isinstance(extension, str):
            problems.append(("/extension", f"must be a string, got {_kind(extension)}"))
            extension = None
        ext_config = section.get("extensionConfig", section.get("extension-config"))
        if ext_config is None:
            ext_config = {}
        elif not isinstance(ext_config, Mapping):
            problems.append(("/extensionConfig", f"must be an object, got {_kind(ext_config)}"))
            ext_config = {}
        config = cls(
            type=conv_type.strip().lower() or "json",
            device_name_expression=text("deviceNameExpression", ""),
            device_name_source=source("deviceNameExpressionSource"),
            device_type_expression=text("deviceProfileExpression", "default", "deviceTypeExpression"),
            device_type_source=_type_source(scope, section, source),
            attributes=_points(section, "attributes", problems),
            timeseries=_points(section, "timeseries", problems),
            extension=extension.strip() if extension and extension.strip() else None,
            extension_config=copy.deepcopy(dict(ext_config)),
            raw=copy.deepcopy(dict(section)),
        )
        if problems:
            raise ConverterConfigError(problems)
        return config

    def pointer(self, field_name: str) -> str:
        """The JSON pointer (relative to the section) of ``device_name`` or ``device_type``."""
        if isinstance(self.raw.get("deviceInfo"), Mapping):
            name = "deviceNameExpression" if field_name == "device_name" else "deviceProfileExpression"
            return "/deviceInfo/" + name
        if field_name == "device_name":
            return "/deviceNameExpression"
        profile = "deviceProfileExpression" in self.raw
        return "/deviceProfileExpression" if profile else "/deviceTypeExpression"


SOURCES = ("request", "constant")


class ConverterConfigError(ValueError):
    """A converter section is malformed; ``problems`` holds (JSON pointer, message) pairs, all of them."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p or '/'}: {m}" for p, m in self.problems))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _type_source(scope: Mapping[str, Any], section: Mapping[str, Any], source: Any) -> str:
    for key in ("deviceProfileExpressionSource", "deviceTypeExpressionSource"):
        if key in scope or key in section:
            return source(key)
    return "request"


def _points(
    section: Mapping[str, Any], name: str, problems: list[tuple[str, str]]
) -> tuple[DataPointConfig, ...]:
    items = section.get(name)
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.append((f"/{name}", f"must be a list, got {_kind(items)}"))
        return ()
    points: list[DataPointConfig] = []
    for index, item in enumerate(items):
        where = f"/{name}/{index}"
        if not isinstance(item, Mapping):
            problems.append((where, f"must be an object, got {_kind(item)}"))
            continue
        fields: dict[str, str | None] = {}
        for key, required in (("key", True), ("value", True), ("type", False), ("tsField", False)):
            value = item.get(key)
            if value is None:
                if required:
                    problems.append((f"{where}/{key}", "is required"))
                fields[key] = None
            elif isinstance(value, str):
                fields[key] = value
            elif key == "value" and not isinstance(value, Mapping | list):
                fields[key] = _constant_text(value)  # a literal number or boolean
            else:
                problems.append((f"{where}/{key}", f"must be a string, got {_kind(value)}"))
                fields[key] = None
        if fields["key"] is None or fields["value"] is None:
            continue
        points.append(
            DataPointConfig(
                key=fields["key"],
                value=fields["value"],
                type=(fields["type"] or "string").strip(),
                ts_field=fields["tsField"] or None,
            )
        )
    return tuple(points)


def _constant_text(value: Any) -> str:
    return json.dumps(value)
