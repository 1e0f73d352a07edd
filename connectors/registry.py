"""Connector types by name: what the gateway reads, checks and builds for each ``connectors[].type``.

A connector type is a :class:`ConnectorType`: a config reader, a factory, and optional functions
that describe the config for ``rest-gateway check`` and name its secrets for log masking. The
bundled types (``rest``) register themselves when their module in :data:`BUNDLED` is imported;
third-party packages add theirs through the entry point group :data:`ENTRY_POINT_GROUP`, each
entry point naming a :class:`ConnectorType` object whose ``name`` equals the entry point's name.
Everything is loaded once, on the first lookup. See docs/connectors.md.
"""
from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from connectors.base import Connector, Uplink
from gateway.config.document import Problems

#: setuptools entry point group read for third-party connector types
ENTRY_POINT_GROUP = "rest_gateway.connectors"
#: modules of the connector types shipped with rest-gateway; importing one registers its type
BUNDLED = ("connectors.rest.registration",)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # gateway.yaml's type is matched lower-cased

#: (config file path, extension folders) → (the parsed config, or None when invalid; its problems)
ConfigReader = Callable[[str, Sequence[str]], tuple[Any, Problems]]


@dataclass(frozen=True)
class ConnectorContext:
    """What a factory gets to build one connector."""

    name: str  # the connector's name in gateway.yaml
    config: Any  # what the type's read_config returned
    uplink: Uplink  # where converted data goes (storage, then ThingsBoard)
    extension_paths: Sequence[str]  # folders searched for custom converters
    logger: logging.Logger  # "connectors.<type>.<name>"
    state_dir: str  # a folder of its own for state kept across restarts (may not exist yet)
    metrics: bool = False  # count requests for the admin listener's /metrics (off: no per-request cost)
    report_strategy: dict[str, Any] | None = None  # gateway.yaml thingsboard.reportStrategy: the default
    store_waits: bool = True  # the uplink's send waits for a disk commit (SQLite storage), holding its thread


def _no_lines(config: Any) -> list[str]:
    return []


def _no_secrets(config: Any) -> Iterable[str]:
    return ()


def _generic_format(config: Any) -> str:
    return "connector config"


@dataclass(frozen=True)
class ConnectorType:
    """One connector type: how its config is read, checked and turned into a running connector."""

    name: str  # the ``type`` in gateway.yaml (lower case)
    read_config: ConfigReader  # must never raise for bad input: report it in the Problems
    create: Callable[[ConnectorContext], Connector]
    describe: Callable[[Any], str] = _generic_format  # "check" prints it after "OK, " for the file
    summary: Callable[[Any], list[str]] = _no_lines  # more lines for "check" (endpoints, ports...)
    secrets: Callable[[Any], Iterable[str]] = _no_secrets  # masked in every log line


_types: dict[str, ConnectorType] = {}
_failures: dict[str, str] = {}  # type name → why its entry point could not be used
_lock = threading.RLock()
_loaded = False


def register(kind: ConnectorType) -> None:
    """Make ``kind`` known under ``kind.name``; ValueError if the name is invalid or already taken."""
    if not isinstance(kind, ConnectorType):
        raise ValueError(f"not a ConnectorType: {kind!r}")
    if not _NAME.match(kind.name):
        raise ValueError(f"connector type name {kind.name!r} must be lower case letters, digits, '_', '-' or '.'")
    with _lock:
        known = _types.get(kind.name)
        if known is not None and known is not kind:
            raise ValueError(f"connector type {kind.name!r} is already registered")
        _types[kind.name] = kind


def unregister(name: str) -> None:
    """Forget the type ``name`` (for tests that register one in-process)."""
    with _lock:
        _types.pop(name, None)


def connector_type(name: str) -> ConnectorType | None:
    """The registered type ``name``, or None."""
    _load()
    return _types.get(name)


def known_types() -> list[str]:
    """The names of every registered type, sorted."""
    _load()
    return sorted(_types)


def load_failures() -> dict[str, str]:
    """Entry points that could not be used: type name → the reason."""
    _load()
    return dict(_failures)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for module in BUNDLED:
            importlib.import_module(module)  # a broken bundled type is a bug: let it raise
        for point in entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(point)
        _loaded = True


def _load_entry_point(point: Any) -> None:
    where = f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP})"
    if point.name in _types:
        _failures.setdefault(point.name, f"{where} ignored: the type is already registered")
        return
    try:
        kind = point.load()
    except Exception as exc:  # a broken plugin must not stop the gateway from reporting it
        _failures[point.name] = f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
        return
    if not isinstance(kind, ConnectorType):
        _failures[point.name] = f"{where} names a {type(kind).__name__}, not a connectors.registry.ConnectorType"
    elif kind.name != point.name:
        _failures[point.name] = f"{where} names the type {kind.name!r}; the names must match"
    else:
        try:
            register(kind)
        except ValueError as exc:
            _failures[point.name] = f"{where}: {exc}"
