"""Hot reload: re-read every config file and apply it whole, or refuse it whole and keep running as before.

A reload (SIGHUP, ``rest-gateway reload``, a change on disk with ``reload.watch``, later remote
configuration) reads the files exactly as ``rest-gateway check`` does. Then:

* ``invalid``: any error in any file; every error is logged (file, key, fix), nothing changes;
* ``restart_required``: valid, but changing what the running listeners, storage or MQTT session
  were built from (see :func:`restart_only_changes` and each connector's ``prepare_reload``);
  each such change is logged by name and nothing at all is applied, so the running state is
  always exactly one config file set, never half of each;
* ``failed``: valid, but a connector could not build from it (a converter that cannot load...);
* ``unchanged``: the files say what is already running;
* ``applied``: every connector prepared its new handlers beside the running ones, then all of
  them switched at once; requests already in flight finish on the previous configuration.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.base import ApplyReload, Connector, RestartRequired
from gateway.config.loader import BUNDLED_EXTENSIONS, LoadedConfig, read_all
from gateway.config.model import GatewayConfig

OUTCOMES = ("applied", "unchanged", "invalid", "restart_required", "failed")
#: GatewayConfig fields a running daemon takes over a reload; every other field needs a restart
LIVE_FIELDS = frozenset({"file", "log_level", "extension_paths", "reload"})
#: GatewayConfig field → how gateway.yaml calls it, for the log
_SECTION_NAMES = {"thingsboard": "thingsboard (the MQTT connection to ThingsBoard)",
                  "storage": "storage (the event storage)",
                  "connectors": "connectors (which connectors run, their names, types or files)",
                  "admin": "admin (the admin listener)", "logging": "logging.format", "pid_file": "pidFile"}
#: ThingsBoardConfig fields holding credentials: named as "security", never shown
_TB_SECURITY = frozenset({"access_token", "username", "password", "client_id", "tls"})

log = logging.getLogger("gateway.reload")


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did: its outcome, what asked for it, and the problems or changes it found."""

    outcome: str  # one of OUTCOMES
    reason: str  # what asked for it ("SIGHUP", "change on disk of ...")
    problems: list[str] = field(default_factory=list)  # errors, restart-only changes or the failure
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """The files on disk are what runs now."""
        return self.outcome in ("applied", "unchanged")


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Each change of the general config that needs a restart, named (credentials are never shown)."""
    changes = []
    for item in dataclasses.fields(GatewayConfig):
        if item.name in LIVE_FIELDS:
            continue
        before, after = getattr(old, item.name), getattr(new, item.name)
        if before == after:
            continue
        name = _SECTION_NAMES.get(item.name, item.name)
        detail = _changed_keys(item.name, before, after)
        changes.append(f"{new.file}: {name}" + (f": {detail}" if detail else ""))
    return changes


def _changed_keys(section: str, before: Any, after: Any) -> str:
    if not (dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after)):
        return ""
    keys = []
    for item in dataclasses.fields(before):
        if getattr(before, item.name) != getattr(after, item.name):
            key = "security" if section == "thingsboard" and item.name in _TB_SECURITY else item.name
            if key not in keys:
                keys.append(key)
    return ", ".join(keys) + " changed"


class Reloader:
    """Runs one reload at a time for a daemon, and counts them for /metrics."""

    def __init__(self, loaded: Callable[[], LoadedConfig], connectors: Callable[[], list[Connector]],
                 apply_general: Callable[[LoadedConfig], None]) -> None:
        """``apply_general`` takes a valid new config's live settings (log level, watch, log masks)."""
        self._loaded = loaded
        self._connectors = connectors
        self._apply_general = apply_general
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.last: ReloadResult | None = None
        self.loaded_at = time.time()  # when the running configuration was read
        self.listeners: list[Callable[[ReloadResult], object]] = []  # told after every reload

    def reload(self, reason: str) -> ReloadResult:
        """Read every config file again and apply it whole or not at all; never raises."""
        with self._lock:
            try:
                result = self._reload(reason)
            except Exception as exc:  # a bug must not take the running gateway down
                log.exception("config reload (%s) failed unexpectedly; the running configuration stays", reason)
                result = ReloadResult("failed", reason, [f"internal error {type(exc).__name__}: {exc}"])
            self.counts[result.outcome] += 1
            self.last = result
            if result.outcome == "applied":
                self.loaded_at = result.at
        for listener in self.listeners:
            try:
                listener(result)
            except Exception:
                log.exception("config reload listener failed")
        return result

    def _reload(self, reason: str) -> ReloadResult:
        started = time.perf_counter()
        running = self._loaded()
        path = running.gateway.file
        report = read_all(path)
        if report.errors or report.gateway is None:
            problems = [str(p) for p in report.errors] or [f"{path}: the general config cannot be used"]
            log.error("config reload (%s) refused: %d problem(s) in the new files; the running configuration "
                      "stays (rest-gateway check -c %s shows the same):", reason, len(problems), path)
            for problem in problems:
                log.error("  %s", problem)
            return ReloadResult("invalid", reason, problems)
        new = LoadedConfig(report.gateway, report.connectors, report.warnings)
        changes = restart_only_changes(running.gateway, new.gateway)
        if changes:  # the connector list differs too: do not ask connectors about configs they do not own
            return self._needs_restart(reason, changes)
        if new.gateway == running.gateway and _same_connector_configs(running, new):
            log.info("config reload (%s): the files say what is running; nothing to change", reason)
            return ReloadResult("unchanged", reason)
        try:
            prepared, changes = self._prepare(new)
        except Exception as exc:  # e.g. a custom converter that cannot be built from its new config
            log.error("config reload (%s) failed: a connector cannot use the new configuration: %s: %s; "
                      "the running configuration stays", reason, type(exc).__name__, exc)
            return ReloadResult("failed", reason, [f"{type(exc).__name__}: {exc}"])
        if changes:
            return self._needs_restart(reason, changes)
        for warning in new.warnings:
            log.warning("config: %s", warning)
        for apply in prepared:
            apply()
        self._apply_general(new)
        log.info("config reload (%s) applied: %s and %d connector file(s), read, checked and switched in %.0f ms",
                 reason, path, len(new.connectors), (time.perf_counter() - started) * 1000)
        return ReloadResult("applied", reason)

    def _prepare(self, new: LoadedConfig) -> tuple[list[ApplyReload], list[str]]:
        """Every connector's prepared switch, or the restart-only changes they found. Raises if one cannot build."""
        by_name = {connector.name: connector for connector in self._connectors()}
        folders = [*new.gateway.extension_paths, BUNDLED_EXTENSIONS]
        prepared: list[ApplyReload] = []
        changes: list[str] = []
        for entry, config in new.connectors:
            try:
                prepared.append(by_name[entry.name].prepare_reload(config, folders))
            except RestartRequired as exc:
                changes += exc.changes
        return prepared, changes

    @staticmethod
    def _needs_restart(reason: str, changes: Iterable[str]) -> ReloadResult:
        changes = list(changes)
        log.error("config reload (%s) refused: %d change(s) need a restart, so nothing was applied (restart "
                  "the gateway to apply them, or undo them to reload the rest):", reason, len(changes))
        for change in changes:
            log.error("  needs a restart: %s", change)
        return ReloadResult("restart_required", reason, changes)

    def stats(self) -> dict[str, Any]:
        """Reloads by outcome, the last one's time and outcome, and when the running config was read."""
        last = self.last
        return {"counts": dict(self.counts), "loaded_at": self.loaded_at,
                "last_at": last.at if last is not None else None,
                "last_ok": last.ok if last is not None else None,
                "last_outcome": last.outcome if last is not None else None}


def _same_connector_configs(old: LoadedConfig, new: LoadedConfig) -> bool:
    return [(e, c) for e, c in old.connectors] == [(e, c) for e, c in new.connectors]
