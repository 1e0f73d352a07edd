"""Remote configuration (``thingsboard.remoteConfiguration: true``): report the config, take changes, report outcomes.

On every new MQTT session the configuration is published as client attributes of the gateway
device (see :mod:`gateway.remote_config.report`), then the shared attributes ``RemoteLoggingLevel``
and one per connector name are requested, as the reference gateway does for its keys. Shared
attribute updates (``v1/devices/me/attributes``) and that answer are handled one at a time, in
order, on one worker thread: never on an MQTT thread, never two changes at once.

* ``<connector name>``: a new connector file, through :func:`gateway.remote_config.apply.change_connector`.
  In the answer to the request on connect it is applied only when its ``ts`` is newer than the
  file (the reference's rule), so a change made while the gateway was away is applied, an old one is not.
* ``RemoteLoggingLevel``: the log level of the whole gateway; ``NONE`` (or deleting the attribute)
  returns to gateway.yaml's ``logLevel``. Kept in memory, asked for again on each connect.
* ``general_configuration``, ``storage_configuration``, ``logs_configuration``, ``grpc_configuration``,
  and ``active_connectors`` naming other connectors: refused, as they need a restart here.

Each outcome is reported in the client attribute ``remoteConfigurationStatus``.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway import __version__
from gateway.config.loader import BUNDLED_EXTENSIONS, LoadedConfig
from gateway.config.model import ConnectorEntry
from gateway.reload import ReloadResult
from gateway.remote_config.apply import Outcome, change_connector
from gateway.remote_config.report import (
    ACTIVE_CONNECTORS,
    LOG_LEVEL_ATTRIBUTE,
    RESTART_ONLY,
    STATUS_ATTRIBUTE,
    connector_attribute,
    general_attributes,
    now_ms,
    read_raw,
)

#: levels RemoteLoggingLevel may take (the reference's, TRACE read as DEBUG); NONE returns to gateway.yaml's
LEVELS = {"DEBUG": "DEBUG", "TRACE": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "WARN": "WARNING",
          "ERROR": "ERROR", "CRITICAL": "CRITICAL", "NONE": None}
#: how long the answer to the attribute request on connect is waited for (seconds)
REQUEST_TIMEOUT = 10.0
#: updates waiting for the worker; more are dropped with a warning (ThingsBoard sends few)
MAX_QUEUED = 100
#: how long stopping waits for a change being applied (seconds; a reload takes milliseconds)
STOP_WAIT = 5.0


class RemoteLink(Protocol):
    """What remote configuration uses of the northbound client (:class:`gateway.northbound.Northbound`)."""

    def publish_own_attributes(self, values: dict[str, Any]) -> None: ...

    def request_own_shared_attributes(self, keys: list[str], timeout: float) -> dict[str, Any] | None: ...


class RemoteConfigurator:
    """Takes the gateway device's shared attributes, changes config through ``reload``, tells ThingsBoard.

    ``loaded()`` is the running configuration, ``reload(reason)`` the daemon's atomic reload,
    ``secrets()`` every configured credential (masked in reports), ``apply_log_level(level or None)``
    sets the gateway's log level (None: back to gateway.yaml's), ``max_bytes`` the largest publish.
    """

    def __init__(self, link: RemoteLink, loaded: Callable[[], LoadedConfig], reload: Callable[[str], ReloadResult],
                 secrets: Callable[[], Iterable[str]], apply_log_level: Callable[[str | None], None],
                 max_bytes: int, logger: logging.Logger) -> None:
        self.link = link
        self._loaded = loaded
        self._reload = reload
        self._secrets = secrets
        self._apply_log_level = apply_log_level
        self.max_bytes = max_bytes
        self.log = logger
        self.remote_level: str | None = None  # the RemoteLoggingLevel applied, None when none is
        self._level_name = "NONE"  # ... as ThingsBoard named it
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(MAX_QUEUED)
        self._handled_ts: dict[str, Any] = {}  # connector → ts of the last attribute handled (not retried on connect)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running_files: dict[str, Any] = {}  # path → content of each config file that runs
        self.snapshot()

    # ------------------------------------------------------------- called on MQTT / reload threads: queue only

    def on_connected(self) -> None:
        """A new MQTT session: report the configuration, then ask for the shared attributes."""
        self._put(("connected", None))

    def on_shared_attributes(self, data: dict[str, Any]) -> None:
        """ThingsBoard changed shared attributes of the gateway device."""
        self._put(("update", data))

    def after_reload(self, result: ReloadResult) -> None:
        """A reload (any trigger) applied new files: remember what runs now and report it again."""
        if result.outcome == "applied":
            self.snapshot()
            self._put(("report", None))

    def snapshot(self) -> None:
        """Read the config files that run now (at start, and right after each applied reload).

        What is reported and compared is what runs, not a later edit on disk that a reload refused.
        """
        loaded = self._loaded()
        paths = [loaded.gateway.file, *(entry.configuration for entry, _ in loaded.connectors)]
        self._running_files = {path: read_raw(path) for path in paths}

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.log.warning("remote configuration: too many updates waiting; dropped a %s", item[0])

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the worker thread (before the northbound link, so no session is missed)."""
        self._thread = threading.Thread(target=self._run, name="rgw-remote-config", daemon=True)
        self._thread.start()
        self.log.warning("remote configuration is on: ThingsBoard may change %s and the log level",
                         ", ".join(e.configuration for e, _ in self._loaded().connectors))

    def stop(self) -> None:
        """Take no more changes; wait briefly for one being applied (a change is never cut halfway by us)."""
        self._stopping.set()
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(STOP_WAIT)
        if self._thread.is_alive():
            self.log.warning("remote configuration: still waiting for ThingsBoard's answer; stopping without it")
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping.is_set():
                return
            kind, data = item
            try:
                if kind == "connected":
                    self.report()
                    self._ask_shared()
                elif kind == "report":
                    self.report()
                else:
                    self.handle(data, initial=False)
            except Exception:  # one bad update must not end remote configuration
                self.log.exception("remote configuration: handling a %s failed", kind)

    # ------------------------------------------------------------- work (worker thread)

    def report(self) -> None:
        """Publish the configuration: the general attributes, then one attribute per connector."""
        loaded, secrets, ts, files = self._loaded(), list(self._secrets()), now_ms(), self._running_files
        level = logging.getLevelName(logging.getLogger().level)
        self._publish(general_attributes(loaded, files.get(loaded.gateway.file), secrets, level, self._level_name,
                                         __version__, ts))
        for entry, _ in loaded.connectors:
            self._publish(connector_attribute(entry, files.get(entry.configuration), secrets, level, ts))

    def _publish(self, values: dict[str, Any]) -> None:
        size = len(json.dumps(values, separators=(",", ":")).encode())
        if size > self.max_bytes:
            names = ", ".join(values)
            self.log.warning("remote configuration: %s not reported: %d bytes is above maxPayloadSize %d",
                             names, size, self.max_bytes)
            values = {STATUS_ATTRIBUTE: Outcome(names, False, "not_reported", [
                f"{names}: {size} bytes, above thingsboard.maxPayloadSize ({self.max_bytes})"]).status(now_ms())}
        self.link.publish_own_attributes(values)

    def _ask_shared(self) -> None:
        keys = [LOG_LEVEL_ATTRIBUTE, *(entry.name for entry, _ in self._loaded().connectors)]
        values = self.link.request_own_shared_attributes(keys, REQUEST_TIMEOUT)
        if values is None:
            self.log.warning("remote configuration: ThingsBoard did not answer the request for the shared "
                             "attributes %s within %g s; later updates are still taken", keys, REQUEST_TIMEOUT)
            return
        self.handle(values, initial=True)

    def handle(self, data: dict[str, Any], initial: bool) -> None:
        """Apply shared attributes ``data``, one key at a time; ``initial``: the answer on connect."""
        connectors = {entry.name: entry for entry, _ in self._loaded().connectors}
        for key, value in data.items():
            if self._stopping.is_set():
                return
            if key == "deleted":
                if isinstance(value, list) and LOG_LEVEL_ATTRIBUTE in value:
                    self._log_level("NONE")
            elif key == LOG_LEVEL_ATTRIBUTE:
                if not (initial and isinstance(value, str) and value.strip().upper() == self._level_name):
                    self._log_level(value)  # on reconnect, the level already applied is not applied again
            elif key in connectors:
                if initial and not self._newer(key, value, connectors[key]):
                    continue
                self._connector(connectors[key], value)
            elif key in RESTART_ONLY:
                self._status(Outcome(key, False, "refused", [
                    f"{key} cannot be changed from ThingsBoard: it needs a restart here; edit "
                    f"{self._loaded().gateway.file} and restart (the log level: RemoteLoggingLevel)"]))
            elif key == ACTIVE_CONNECTORS:
                self._active_connectors(value, list(connectors))
            elif isinstance(value, dict) and "configurationJson" in value:
                self._status(Outcome(key, False, "refused", [
                    f"{key}: no connector of this name runs; adding a connector needs gateway.yaml and a restart"]))
            else:
                self.log.debug("remote configuration: shared attribute %r is not a configuration; ignored", key)

    def _newer(self, name: str, value: Any, entry: ConnectorEntry) -> bool:
        """On connect: is this connector attribute newer than the file, and not handled already in this process?"""
        ts = value.get("ts") if isinstance(value, dict) else None
        if not isinstance(ts, int | float) or self._handled_ts.get(name) == ts:
            return False
        try:
            newer = ts > os.path.getmtime(entry.configuration) * 1000
        except OSError:
            newer = True
        return newer

    def _connector(self, entry: ConnectorEntry, value: Any) -> None:
        if isinstance(value, dict) and value.get("ts") is not None:
            self._handled_ts[entry.name] = value["ts"]  # refused or not, the next connect does not retry it
        self.log.info("remote configuration: new configuration for connector %r from ThingsBoard", entry.name)
        folders = [*self._loaded().gateway.extension_paths, BUNDLED_EXTENSIONS]
        outcome = change_connector(entry, value, self._running_files.get(entry.configuration), folders, self._reload)
        if outcome.ok:
            self.log.info("remote configuration of %r: %s", entry.name, outcome.outcome)
        self._status(outcome)
        if not outcome.ok or outcome.outcome == "unchanged":  # an applied reload reports everything anew
            secrets, level = list(self._secrets()), logging.getLevelName(logging.getLogger().level)
            self._publish(connector_attribute(entry, self._running_files.get(entry.configuration), secrets, level,
                                              now_ms()))

    def _log_level(self, value: Any) -> None:
        name = value.strip().upper() if isinstance(value, str) else None
        if name not in LEVELS:
            self._status(Outcome(LOG_LEVEL_ATTRIBUTE, False, "invalid", [
                f"{LOG_LEVEL_ATTRIBUTE}: unknown level {value!r} (expected one of {', '.join(LEVELS)})"]))
            return
        level = LEVELS[name]
        self._apply_log_level(level)
        self.remote_level, self._level_name = level, name
        self.log.warning("remote configuration: log level %s (RemoteLoggingLevel %s from ThingsBoard)",
                         logging.getLevelName(logging.getLogger().level), name)
        self.link.publish_own_attributes({LOG_LEVEL_ATTRIBUTE: name, STATUS_ATTRIBUTE: Outcome(
            LOG_LEVEL_ATTRIBUTE, True, "applied").status(now_ms())})

    def _active_connectors(self, value: Any, running: list[str]) -> None:
        if isinstance(value, list) and sorted(map(str, value)) == sorted(running):
            self._status(Outcome(ACTIVE_CONNECTORS, True, "unchanged"))
            return
        self._status(Outcome(ACTIVE_CONNECTORS, False, "refused", [
            f"{ACTIVE_CONNECTORS}: {value!r} differs from the running {running!r}: adding or removing connectors "
            "needs gateway.yaml and a restart"]))

    def _status(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.log.error("remote configuration of %r refused (%s); the running configuration stays:%s",
                           outcome.attribute, outcome.outcome, "".join(f"\n  {e}" for e in outcome.errors))
        self.link.publish_own_attributes({STATUS_ATTRIBUTE: outcome.status(now_ms())})
