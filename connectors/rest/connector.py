"""The REST connector: builds converters and handlers from a RestConfig and runs the HTTP server."""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from connectors.base import Connector, Uplink
from connectors.rest.app import create_app
from connectors.rest.device_api.coap.server import CoapServer
from connectors.rest.device_api.service import DeviceApi
from connectors.rest.device_api.views import register_device_api
from connectors.rest.downlink.attribute_requests import AttributeRequestEntry, AttributeRequestHandler
from connectors.rest.downlink.service import DownlinkService
from connectors.rest.handler import MappingHandler
from connectors.rest.metrics import RequestMetrics
from connectors.rest.model import RestConfig
from connectors.rest.response_waits import ResponseWaits
from connectors.rest.server import HttpServer
from converters.loader import load_converter


class RestConnector(Connector):
    """Serves one HTTP endpoint per ``mapping`` entry of a rest.json."""

    type_name = "rest"

    def __init__(self, name: str, config: RestConfig, uplink: Uplink,
                 extension_paths: Sequence[str] = (), logger: logging.Logger | None = None,
                 state_dir: str | None = None, metrics: bool = False) -> None:
        """``metrics``: count requests by endpoint (for the admin /metrics; off costs nothing per request)."""
        super().__init__(name, config, uplink)
        self.log = logger or logging.getLogger(f"connectors.rest.{name}")
        self.request_metrics = RequestMetrics() if metrics else None
        handlers: dict[str, dict[str, MappingHandler]] = {}
        waiting = any(mapping.response.expected for mapping in config.mappings)
        self.response_waits = ResponseWaits(config.server.max_waiting_responses) if waiting else None
        for mapping in config.mappings:
            converter = load_converter(mapping.converter, extension_paths, self.log)
            handler = MappingHandler(mapping, converter, uplink, self.log, self.request_metrics, self.response_waits)
            by_method = handlers.setdefault(mapping.endpoint, {})
            for method in mapping.methods:
                by_method[method] = handler
        # waiting attribute requests always leave waitress threads free for other requests
        slots = threading.BoundedSemaphore(max(1, config.server.threads - 2))
        for raw in config.attribute_requests:
            entry = AttributeRequestEntry.from_dict(raw)
            request_handler = AttributeRequestHandler(entry, uplink, slots, self.log)
            by_method = handlers.setdefault(entry.endpoint, {})
            for method in entry.methods:
                by_method[method] = request_handler  # type: ignore[assignment]
        self.app = create_app(handlers, config.server.max_body_bytes, self._status, self.log,
                              self.request_metrics)
        server_config = config.server
        self.device_api: DeviceApi | None = None
        self.coap: CoapServer | None = None
        if config.device_api is not None and config.device_api.enabled:
            self.device_api = DeviceApi(config.device_api, uplink, state_dir, self.log)
            coap = config.device_api.coap
            if coap is not None and coap.enabled:
                self.coap = CoapServer(self.device_api, coap, self.log)
            register_device_api(self.app, self.device_api)
            # a waiting long poll holds a waitress thread: one more thread per allowed poll
            server_config = replace(server_config,
                                    threads=server_config.threads + config.device_api.max_concurrent_polls)
        if self.response_waits is not None:
            # a request waiting for ThingsBoard's answer (responseExpected) holds a thread: one more per wait
            server_config = replace(server_config, threads=server_config.threads + self.response_waits.limit)
        self.server = HttpServer(self.app, server_config, self.log)
        self.downlink = DownlinkService(config, uplink, self.own_address, self.log)

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
        return {"http_server": self.server.alive, "downlink": self.downlink.alive}

    def metrics(self) -> dict[str, Any]:
        """Request counters, downlink relays and the device API's counters (every key of its stats())."""
        return {"requests": self.request_metrics.snapshot() if self.request_metrics is not None else None,
                "downlink": self.downlink.metrics(),
                "device_api": self._device_api_stats() if self.device_api is not None else None,
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
