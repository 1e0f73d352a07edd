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
from gateway.config.loader import BUNDLED_EXTENSIONS, LoadedConfig
from gateway.downlink import DownlinkRouter
from gateway.gateway_rpc import GatewayRpc
from gateway.northbound import Northbound
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

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
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
            uplinks[entry.name] = self.uplink.for_connector(entry.name)
            self.connectors.append(kind.create(ConnectorContext(
                entry.name, config, uplinks[entry.name], extension_paths,
                logging.getLogger(f"connectors.{entry.type}.{entry.name}"), own_dir, metrics=cfg.admin.enabled)))
        self.northbound.set_downlink_handler(DownlinkRouter(self.connectors, self.uplink, log))
        self.northbound.set_gateway_rpc_handler(GatewayRpc(self.northbound, uplinks, self.storage.count,
                                                           self.request_restart, log))
        self._started: list[Connector] = []
        self.admin = self._admin_server() if cfg.admin.enabled else None

    def _admin_server(self) -> AdminServer:
        admin_log = logging.getLogger("gateway.admin")
        app = AdminApp(self.loaded.gateway.admin, exporter(self), lambda: liveness(self), lambda: readiness(self),
                       None, admin_log)
        return AdminServer(app, self.loaded.gateway.admin, admin_log)

    def request_restart(self) -> None:
        """Stop as on SIGTERM, then have the CLI start the gateway again in this process (docs/operations.md)."""
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            log.error("restart refused: this daemon is not run by run_until_signalled (the CLI)")
            return
        self.restart_requested = True
        os.kill(os.getpid(), signal.SIGTERM)

    def start(self) -> None:
        """Connect to ThingsBoard in the background, start every connector, then the admin listener."""
        self.northbound.start()
        for connector in self.connectors:
            connector.start()
            self._started.append(connector)
        if self.admin is not None:
            self.admin.start()
        self.running = True
        log.info("rest-gateway started: %d connector(s), storage %s, ThingsBoard %s:%d",
                 len(self.connectors), self.loaded.gateway.storage.type,
                 self.loaded.gateway.thingsboard.host, self.loaded.gateway.thingsboard.port)

    def stop(self) -> None:
        """Stop accepting requests, finish in-flight ones, deliver what is in flight, disconnect.

        The admin listener stays up (answering /readyz with 503) until storage is closed.
        """
        self.running = False
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


def run_until_signalled(daemon: Daemon) -> None:
    """Start ``daemon`` and block until SIGINT or SIGTERM, then stop it."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon.start()
        while not stop.wait(1.0):
            pass
    finally:
        daemon.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
