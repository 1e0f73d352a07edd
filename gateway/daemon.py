"""The daemon's lifecycle: build storage, the ThingsBoard client and connectors; start; stop cleanly."""
from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

from connectors.base import Connector
from connectors.registry import ConnectorContext, connector_type
from gateway.admin.app import AdminApp
from gateway.admin.collector import exporter
from gateway.admin.health import liveness, readiness
from gateway.admin.server import AdminServer
from gateway.admin.status_page import StatusPage
from gateway.config.loader import BUNDLED_EXTENSIONS, LoadedConfig
from gateway.config.model import ReloadConfig
from gateway.config_watch import ConfigWatcher
from gateway.downlink import DownlinkRouter
from gateway.gateway_rpc import GatewayRpc
from gateway.logs import mask_more, set_level
from gateway.northbound import Northbound
from gateway.reload import Reloader, ReloadResult
from gateway.remote_config.service import RemoteConfigurator
from gateway.statistics.reporter import StatisticsReporter
from gateway.storage.factory import create_storage
from gateway.uplink import GatewayUplink

log = logging.getLogger("gateway")


def config_secrets(loaded: LoadedConfig) -> Iterator[str]:
    """Every credential in the config, so logging can mask them."""
    tb = loaded.gateway.thingsboard
    yield from (tb.access_token, tb.password, loaded.gateway.admin.password)
    for entry, config in loaded.connectors:
        kind = connector_type(entry.type)
        if kind is not None:
            yield from kind.secrets(config)


def config_token_paths(loaded: LoadedConfig) -> Iterator[str]:
    """URL prefixes followed by a device token (each device API's base path), masked in logs."""
    for _, config in loaded.connectors:
        device_api = getattr(config, "device_api", None)  # connectors with a token-in-path device API
        if device_api is not None and device_api.enabled:
            yield device_api.base_path


class Daemon:
    """Owns storage, the northbound MQTT client and the connectors."""

    def __init__(self, loaded: LoadedConfig, log_level_fixed: bool = False) -> None:
        """``log_level_fixed``: the command line set the log level; a reload keeps it."""
        self.loaded = loaded
        self.log_level_fixed = log_level_fixed
        # the level the files (or the command line) set; ThingsBoard's RemoteLoggingLevel overrides it
        self.base_log_level = logging.getLevelName(logging.getLogger().level) if log_level_fixed \
            else loaded.gateway.log_level
        self.remote_log_level: str | None = None
        self.started_at = time.time()
        self.running = False  # True from the end of start() to the beginning of stop() (readiness)
        self.restart_requested = False  # ThingsBoard's gateway_restart: the CLI starts the process again
        cfg = loaded.gateway
        self.storage = create_storage(cfg.storage)
        dead_letter = None
        if cfg.storage.type == "sqlite":
            dead_letter = os.path.join(os.path.dirname(cfg.storage.data_file_path), "dead-letter.jsonl")
        self.northbound = Northbound(cfg.thingsboard, self.storage, logging.getLogger("gateway.mqtt"),
                                     dead_letter_path=dead_letter, read_batch=cfg.storage.read_batch)
        self.uplink = GatewayUplink(self.storage, self.northbound, rate_limit=cfg.storage.rate_limit)
        self.statistics = None if not cfg.statistics.enabled else StatisticsReporter(
            cfg.statistics, self.storage, cfg.storage, self.northbound, logging.getLogger("gateway.statistics"))
        extension_paths = [*cfg.extension_paths, BUNDLED_EXTENSIONS]
        # state a connector keeps across restarts (the device API's device-api.db) lives beside the
        # event storage; with several connectors, each gets a folder named after it
        state_dir = os.path.dirname(os.path.abspath(cfg.storage.data_file_path))
        self.connectors: list[Connector] = []
        uplinks = {}
        for entry, config in loaded.connectors:
            kind = connector_type(entry.type)
            if kind is None:  # load_config reported it; only a caller bypassing it gets here
                raise ValueError(f"unknown connector type {entry.type!r}")
            own_dir = state_dir if len(loaded.connectors) == 1 else \
                os.path.join(state_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", entry.name))
            counts = self.statistics.counts_for(entry.name) if self.statistics is not None else None
            uplinks[entry.name] = self.uplink.for_connector(entry.name, counts)
            self.connectors.append(kind.create(ConnectorContext(
                entry.name, config, uplinks[entry.name], extension_paths,
                logging.getLogger(f"connectors.{entry.type}.{entry.name}"), own_dir, metrics=cfg.admin.enabled,
                report_strategy=cfg.thingsboard.report_strategy, store_waits=self.storage.waits_for_commit)))
        self.northbound.set_downlink_handler(DownlinkRouter(self.connectors, self.uplink, log))
        self.northbound.set_gateway_rpc_handler(GatewayRpc(self.northbound, uplinks, self.storage.count,
                                                           self.request_restart, log))
        self._started: list[Connector] = []
        self.status_page: StatusPage | None = None
        self.reloader = Reloader(lambda: self.loaded, lambda: self.connectors, self._apply_general)
        self.reloader.listeners.append(self._rebaseline_watcher)
        self.remote_config: RemoteConfigurator | None = None
        if cfg.thingsboard.remote_configuration:
            self.remote_config = RemoteConfigurator(
                self.northbound, lambda: self.loaded, self.reload, lambda: config_secrets(self.loaded),
                self.set_remote_log_level, cfg.thingsboard.max_payload_bytes,
                logging.getLogger("gateway.remote_config"))
            self.northbound.set_own_attributes_handler(self.remote_config)
            self.reloader.listeners.append(self.remote_config.after_reload)
        self.watcher: ConfigWatcher | None = None
        self.admin = self._admin_server() if cfg.admin.enabled else None

    def _admin_server(self) -> AdminServer:
        admin_log = logging.getLogger("gateway.admin")
        self.status_page = StatusPage(self, lambda: config_secrets(self.loaded))
        app = AdminApp(self.loaded.gateway.admin, exporter(self), lambda: liveness(self), lambda: readiness(self),
                       self.status_page.render, admin_log)
        return AdminServer(app, self.loaded.gateway.admin, admin_log)

    def request_restart(self) -> None:
        """Stop as on SIGTERM, then have the CLI start the gateway again in this process (docs/operations.md)."""
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            log.error("restart refused: this daemon is not run by run_until_signalled (the CLI)")
            return
        self.restart_requested = True
        os.kill(os.getpid(), signal.SIGTERM)

    def set_remote_log_level(self, level: str | None) -> None:
        """ThingsBoard's RemoteLoggingLevel: log at ``level`` until it is cleared (None: the configured level)."""
        self.remote_log_level = level
        set_level(level or self.base_log_level)

    def start(self) -> None:
        """Connect to ThingsBoard in the background, start every connector, then the admin listener."""
        if self.remote_config is not None:
            self.remote_config.start()
        self.northbound.start()
        for connector in self.connectors:
            connector.start()
            self._started.append(connector)
        if self.admin is not None:
            self.admin.start()
        for service in (self.status_page, self.statistics):
            if service is not None:
                service.start()
        self._use_watch(self.loaded.gateway.reload)
        self.running = True
        log.info("rest-gateway started: %d connector(s), storage %s, ThingsBoard %s:%d",
                 len(self.connectors), self.loaded.gateway.storage.type,
                 self.loaded.gateway.thingsboard.host, self.loaded.gateway.thingsboard.port)

    def reload(self, reason: str) -> ReloadResult:
        """Apply the config files as they are on disk now, whole or not at all (see gateway/reload.py)."""
        return self.reloader.reload(reason)

    def config_files(self) -> list[str]:
        """The files the running configuration was read from: gateway.yaml, then each connector's."""
        return [self.loaded.gateway.file, *(entry.configuration for entry, _ in self.loaded.connectors)]

    def _apply_general(self, new: LoadedConfig) -> None:
        """A reload's live general settings: log level, log masks, watching (the rest needs a restart)."""
        self.loaded = new
        mask_more(config_secrets(new), config_token_paths(new))
        if not self.log_level_fixed:
            self.base_log_level = new.gateway.log_level
        set_level(self.remote_log_level or self.base_log_level)
        self._use_watch(new.gateway.reload)

    def _use_watch(self, config: ReloadConfig) -> None:
        """Watch the config files as ``config`` says (start, stop, or restart at another interval)."""
        watcher = self.watcher
        if watcher is not None and (not config.watch or watcher.interval != config.interval_s):
            watcher.stop()
            self.watcher = watcher = None
        if config.watch and watcher is None:
            self.watcher = ConfigWatcher(self.config_files, config.interval_s, self.reload,
                                         logging.getLogger("gateway.reload"))
            self.watcher.start()

    def _rebaseline_watcher(self, result: ReloadResult) -> None:
        if self.watcher is not None:
            self.watcher.rebaseline()  # a SIGHUP's reload read the files: no second reload for them

    def stop(self) -> None:
        """Stop accepting requests, finish in-flight ones, deliver what is in flight, disconnect.

        The admin listener stays up (answering /readyz with 503) until storage is closed.
        """
        self.running = False
        if self.remote_config is not None:  # no configuration change while connectors stop
            self.remote_config.stop()
        for service in (self.statistics, self.status_page):
            if service is not None:
                service.stop()
        self._use_watch(ReloadConfig(watch=False))
        for connector in reversed(self._started):
            try:
                connector.stop()
            except Exception:
                log.exception("connector %s did not stop cleanly", connector.name)
        self._started.clear()
        self.northbound.stop(timeout=5.0)
        if self.admin is not None:
            self.admin.stop()
        self.storage.close()
        log.info("rest-gateway stopped")


def catch_early_reloads() -> list[str]:
    """Record SIGHUPs from now on instead of dying of them (the default action); pass the list on.

    Installed before the pid file is written, so a ``rest-gateway reload`` that finds the pid file
    of a gateway still starting asks for a reload once it runs rather than killing it.
    """
    reloads: list[str] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: reloads.append(signal.Signals(signum).name))
    return reloads


def run_until_signalled(daemon: Daemon, reloads: list[str] | None = None) -> None:
    """Start ``daemon`` and block until SIGINT or SIGTERM, then stop it; SIGHUP reloads its config.

    The signal handlers only set flags: the reload runs in this (the main) thread's loop, never
    inside a handler. ``reloads``: SIGHUPs already received (see :func:`catch_early_reloads`).
    """
    wake = threading.Event()
    stopping: list[str] = []
    reloads = [] if reloads is None else reloads

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.append(signal.Signals(signum).name)
        wake.set()

    def request_reload(signum: int, _frame: object) -> None:
        reloads.append(signal.Signals(signum).name)
        wake.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_reload)
    try:
        daemon.start()
        while not stopping:
            wake.wait(1.0)
            wake.clear()
            if reloads and not stopping:
                reloads.clear()  # several SIGHUPs while one reload runs: one more reload reads them all
                daemon.reload("SIGHUP")
    finally:
        daemon.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
