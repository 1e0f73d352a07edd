"""The REST connector: builds converters and handlers from a RestConfig, runs the HTTP server, swaps them on reload."""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flask import Flask

from connectors.base import ApplyReload, Connector, RestartRequired, Uplink
from connectors.rest.app import create_app
from connectors.rest.app_switch import AppSwitch
from connectors.rest.body_bytes import BodyBytes
from connectors.rest.device_api.service import DeviceApi
from connectors.rest.device_api.views import register_device_api
from connectors.rest.dispatch import RequestHandler
from connectors.rest.downlink.attribute_requests import AttributeRequestEntry, AttributeRequestHandler
from connectors.rest.downlink.service import DownlinkEntries, DownlinkService
from connectors.rest.handler import MappingHandler
from connectors.rest.metrics import RequestMetrics
from connectors.rest.model import RestConfig
from connectors.rest.reload_checks import restart_only_changes
from connectors.rest.report_strategy import inherited_strategy
from connectors.rest.response_waits import ResponseWaits
from connectors.rest.server import HttpServer
from converters.loader import load_converter

if TYPE_CHECKING:
    from connectors.rest.device_api.coap.server import CoapServer


class RestConnector(Connector):
    """Serves one HTTP endpoint per ``mapping`` entry of a rest.json."""

    type_name = "rest"

    def __init__(self, name: str, config: RestConfig, uplink: Uplink,
                 extension_paths: Sequence[str] = (), logger: logging.Logger | None = None,
                 state_dir: str | None = None, metrics: bool = False,
                 report_strategy: dict[str, Any] | None = None, store_waits: bool = True) -> None:
        """``metrics``: count requests by endpoint (for the admin /metrics; off costs nothing per request);
        ``report_strategy``: the gateway's reportStrategy (gateway.yaml), for mappings and a rest.json
        without their own; ``store_waits``: ``uplink.send`` waits for a disk commit (sizes the default
        ``threads``, see :meth:`ServerConfig.threads_for`)."""
        super().__init__(name, config, uplink)
        self._gateway_report_strategy = report_strategy
        self.log = logger or logging.getLogger(f"connectors.rest.{name}")
        self.request_metrics = RequestMetrics() if metrics else None
        waiting = any(mapping.response.expected for mapping in config.mappings)
        self.response_waits = ResponseWaits(config.server.max_waiting_responses) if waiting else None
        threads = config.server.threads_for(store_waits)
        # waiting attribute requests always leave waitress threads free for other requests
        self._request_slots = threading.BoundedSemaphore(max(1, threads - 2))
        self.device_api: DeviceApi | None = None
        self.coap: CoapServer | None = None
        if config.device_api is not None and config.device_api.enabled:
            self.device_api = DeviceApi(config.device_api, uplink, state_dir, self.log)
            coap = config.device_api.coap
            if coap is not None and coap.enabled:
                # imported only here: aiocoap and asyncio add ~3 MB to every gateway that serves no CoAP
                from connectors.rest.device_api.coap.server import CoapServer
                self.coap = CoapServer(self.device_api, coap, self.log)
            # a waiting long poll holds a waitress thread: one more thread per allowed poll
            threads += config.device_api.max_concurrent_polls
        if self.response_waits is not None:
            # a request waiting for ThingsBoard's answer (responseExpected) holds a thread: one more per wait
            threads += self.response_waits.limit
        self._extension_paths = list(extension_paths)
        self.handlers = self._build_handlers(config, extension_paths, {})
        self.app_switch = AppSwitch(self._build_app(config, self.handlers))
        # statistics on: the uplink carries the counts, and request bodies are counted as they arrive
        counts = getattr(uplink, "counts", None)
        served = self.app_switch if counts is None else BodyBytes(self.app_switch, counts)
        self.server = HttpServer(served, replace(config.server, threads=threads), self.log)
        self.downlink = DownlinkService(config, uplink, self.own_address, self.log)

    @property
    def app(self) -> Flask:
        """The Flask app serving requests now (a reload replaces it)."""
        return self.app_switch.current  # type: ignore[return-value]

    def _build_handlers(self, config: RestConfig, extension_paths: Sequence[str],
                        previous: dict[str, dict[str, RequestHandler]]) -> dict[str, dict[str, RequestHandler]]:
        """endpoint → method → handler for ``config``; an unchanged mapping of ``previous`` keeps its handler."""
        same_folders = list(extension_paths) == list(self._extension_paths)
        running = [h for by_method in previous.values() for h in by_method.values()
                   if isinstance(h, MappingHandler)] if same_folders else []
        handlers: dict[str, dict[str, RequestHandler]] = {}
        inherited = inherited_strategy(config.report_strategy, self._gateway_report_strategy)
        for mapping in config.mappings:
            handler = next((h for h in running if h.mapping == mapping and h.report_default == inherited), None)
            if handler is None:
                converter = load_converter(mapping.converter, extension_paths, self.log)
                handler = MappingHandler(mapping, converter, self.uplink, self.log, self.request_metrics,
                                         self.response_waits, inherited, f"{self.name}{mapping.endpoint}")
                before = previous.get(mapping.endpoint, {})
                old = next((h for m in mapping.methods if isinstance(h := before.get(m), MappingHandler)), None)
                if old is not None:
                    handler.keep_state_of(old)
            by_method = handlers.setdefault(mapping.endpoint, {})
            for method in mapping.methods:
                by_method[method] = handler
        requests_running = [h for by_method in previous.values() for h in by_method.values()
                            if isinstance(h, AttributeRequestHandler)]
        for raw in config.attribute_requests:
            entry = AttributeRequestEntry.from_dict(raw)
            request_handler = next((h for h in requests_running if h.entry == entry), None) or \
                AttributeRequestHandler(entry, self.uplink, self._request_slots, self.log)
            by_method = handlers.setdefault(entry.endpoint, {})
            for method in entry.methods:
                by_method[method] = request_handler  # type: ignore[assignment]
        return handlers

    def _build_app(self, config: RestConfig, handlers: dict[str, dict[str, RequestHandler]]) -> Flask:
        app = create_app(handlers, config.server.max_body_bytes, self._status, self.log, self.request_metrics)
        if self.device_api is not None:
            register_device_api(app, self.device_api)  # the same DeviceApi: its state outlives a reload
        return app

    def prepare_reload(self, config: RestConfig, extension_paths: Sequence[str]) -> ApplyReload:
        """Build the new app (endpoints, converters, security) and downlink rules; apply them on call.

        Raises RestartRequired for listener or device API changes (see reload_checks.py).
        """
        changes = restart_only_changes(self.config, config, self.response_waits is not None)
        if changes:
            raise RestartRequired(changes)
        handlers = self._build_handlers(config, extension_paths, self.handlers)
        app = self._build_app(config, handlers)
        entries = self.downlink.prepare_entries(config)

        summary = _reload_summary(self.handlers, handlers, entries)

        def apply() -> None:
            self.config, self.handlers, self._extension_paths = config, handlers, list(extension_paths)
            self.downlink.use_entries(entries)
            self.app_switch.switch(app)
            self.log.info("reload: %s", summary)

        return apply

    def own_address(self) -> str:
        """This connector's own HTTP address (relative downlink URLs without any baseUrl use it)."""
        host = self.config.server.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if self.config.server.ssl else "http"
        return f"{scheme}://{host}:{self.server.port}"

    def _status(self) -> dict[str, Any]:
        summary = dict(self.uplink.status())
        summary["connector"] = {"name": self.name, "type": self.type_name, "port": self.server.port}
        return summary

    def start(self) -> None:
        if self.coap is not None:
            self.coap.start()  # first: a taken UDP port stops the start before anything else runs
        try:
            self.server.start()
        except BaseException:
            if self.coap is not None:
                self.coap.stop()
            raise
        self.downlink.start()

    def stop(self) -> None:
        self.downlink.stop()  # first: queued relays may post back into this connector's own server
        if self.device_api is not None:
            self.device_api.release_polls()  # waiting polls answer 503 now instead of holding the stop
        if self.coap is not None:
            self.coap.stop()  # observations end with 2.02, posts in flight finish storing
        if self.response_waits is not None:
            self.response_waits.close()  # so do requests waiting for ThingsBoard's answer
        self.server.stop()
        if self.device_api is not None:
            self.device_api.close()

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        if self.response_waits is not None:
            self.response_waits.on_attribute_update(device, data)
        self.downlink.on_attribute_update(device, data)
        if self.device_api is not None:
            self.device_api.on_attribute_update(device, data)

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> bool:
        if self.downlink.on_rpc(device, request_id, method, params):
            return True  # a serverSideRpc entry matches: it wins over the device's RPC poll
        return self.device_api is not None and self.device_api.on_rpc(device, request_id, method, params)

    def liveness(self) -> dict[str, bool]:
        """The HTTP server's and downlink workers' threads, and the CoAP server's when CoAP is on."""
        parts = {"http_server": self.server.alive, "downlink": self.downlink.alive}
        if self.coap is not None:
            parts["coap_server"] = self.coap.alive
        return parts

    def metrics(self) -> dict[str, Any]:
        """Request counters, downlink relays, the device API's counters (every key of its stats()) and the
        requests waiting for ThingsBoard's answer (``responseExpected``)."""
        return {"requests": self.request_metrics.snapshot() if self.request_metrics is not None else None,
                "downlink": self.downlink.metrics(),
                "device_api": self._device_api_stats() if self.device_api is not None else None,
                "response_waits": self.response_waits.stats() if self.response_waits is not None else None,
                "client_address": self.server.forwarded.snapshot() if self.server.forwarded is not None else None}

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "port": self.server.port,
                "endpoints": len(self.config.mappings), "downlink": self.downlink.stats(),
                **({"device_api": self._device_api_stats()} if self.device_api is not None else {}),
                **({"response_waits": self.response_waits.stats()} if self.response_waits is not None else {})}

    def _device_api_stats(self) -> dict[str, Any]:
        assert self.device_api is not None
        stats = self.device_api.stats()
        if self.coap is not None:
            stats.update(self.coap.stats())
        return stats


def _reload_summary(old: dict[str, dict[str, RequestHandler]], new: dict[str, dict[str, RequestHandler]],
                    entries: DownlinkEntries) -> str:
    """What a reload changes, for the log: endpoints added, removed and changed, and the downlink rules."""
    added = [e for e in new if e not in old]
    removed = [e for e in old if e not in new]
    changed = [e for e in new if e in old and new[e] != old[e]]
    parts = [f"{label} {', '.join(items)}" for label, items in
             (("endpoints added:", added), ("removed:", removed), ("changed:", changed)) if items]
    return "; ".join([*(parts or ["endpoints unchanged"]),
                      f"downlink: {len(entries.attribute_updates)} attributeUpdates, {len(entries.rpc)} serverSideRpc"])
