"""Loads the general config and every connector config it names, reporting all problems at once."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.registry import connector_type, known_types, load_failures
from gateway.config.document import Problems, read_document
from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.general import connector_entries, read_general
from gateway.config.locate import join
from gateway.config.model import ConnectorEntry, GatewayConfig

# searched for custom converters after the configured extensionPaths (as the daemon does)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_EXTENSIONS = os.path.join(_ROOT, "extensions")


@dataclass
class LoadedConfig:
    """A valid general config, each connector's entry with its parsed config, and the warnings."""

    gateway: GatewayConfig
    connectors: list[tuple[ConnectorEntry, Any]]
    warnings: list[ConfigProblem] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)  # Unix time the files were read (the status page)


@dataclass
class ConfigReport:
    """Everything learnt reading the configs, valid or not (for ``check`` and for :func:`load_config`)."""

    gateway: GatewayConfig | None
    connectors: list[tuple[ConnectorEntry, Any]]
    files: list[Problems]  # one per file read: the general file first, then each connector file
    formats: dict[str, str]  # file → format description

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for problems in self.files for p in problems.errors]

    @property
    def warnings(self) -> list[ConfigProblem]:
        return [p for problems in self.files for p in problems.warnings]


def read_all(path: str, env: Mapping[str, str] | None = None) -> ConfigReport:
    """Read the general config at ``path`` and every connector config; never raises for bad input."""
    document = read_document(path)
    general = document.problems
    report = ConfigReport(None, [], [general], {})
    if document.data is None:
        return report
    report.formats[document.path] = f"general config ({document.format.upper()})"
    gateway = read_general(document.data, document.path, general, env)
    entries = connector_entries(document.data, document.path, Problems(document.path))
    extension_paths = [*(gateway.extension_paths if gateway else ()), BUNDLED_EXTENSIONS]
    for pointer, entry in entries:
        kind = connector_type(entry.type)
        if kind is None:
            _unknown_type(general, join(pointer, "type"), entry.type)
            continue
        config, problems = kind.read_config(entry.configuration, extension_paths)
        report.files.append(problems)
        if config is not None:
            report.formats[entry.configuration] = kind.describe(config)
            report.connectors.append((entry, config))
    if gateway is not None:
        _check_admin_port(gateway, report.connectors, general)
    report.gateway = gateway if not general.errors else None
    return report


def _check_admin_port(gateway: GatewayConfig, connectors: list[tuple[ConnectorEntry, Any]],
                      general: Problems) -> None:
    """The admin listener must not take a port a connector serves devices on."""
    admin = gateway.admin
    if not admin.enabled:
        return
    for entry, config in connectors:
        server = getattr(config, "server", None)
        if server is not None and server.port == admin.port:
            general.error("/admin/port", f"admin port {admin.port} is also the port of connector "
                          f"{entry.name!r} ({entry.configuration})",
                          "another port for the admin listener (default 9100), or 0 to turn it off")


def load_config(path: str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """The whole valid configuration; raises :class:`ConfigError` with every problem of every file.

    ``env`` (default ``os.environ``) supplies TB_GW_HOST, TB_GW_PORT and TB_GW_ACCESS_TOKEN overrides.
    """
    report = read_all(path, env)
    if report.errors or report.gateway is None:
        raise ConfigError(report.errors)
    return LoadedConfig(report.gateway, report.connectors, report.warnings)


def _unknown_type(problems: Problems, pointer: str, name: str) -> None:
    known = "one of " + ", ".join(known_types())
    failure = load_failures().get(name)
    if failure is not None:  # a plugin claims the name but could not be used
        problems.error(pointer, f"connector type {name!r} is not available: {failure}",
                       f"fix or reinstall the package that provides it, or use {known}")
    else:
        problems.error(pointer, f"unknown connector type {name!r}",
                       f"{known} (other types come from installed plugins, see docs/connectors.md)")
