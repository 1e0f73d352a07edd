"""The REST connector: builds converters and handlers from a RestConfig and runs the HTTP server."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from connectors.base import Connector, Uplink
from connectors.rest.app import create_app
from connectors.rest.handler import MappingHandler
from connectors.rest.model import RestConfig
from connectors.rest.server import HttpServer
from converters.loader import load_converter


class RestConnector(Connector):
    """Serves one HTTP endpoint per ``mapping`` entry of a rest.json."""

    type_name = "rest"

    def __init__(self, name: str, config: RestConfig, uplink: Uplink,
                 extension_paths: Sequence[str] = (), logger: logging.Logger | None = None) -> None:
        super().__init__(name, config, uplink)
        self.log = logger or logging.getLogger(f"connectors.rest.{name}")
        handlers: dict[str, dict[str, MappingHandler]] = {}
        for mapping in config.mappings:
            converter = load_converter(mapping.converter, extension_paths, self.log)
            handler = MappingHandler(mapping, converter, uplink, self.log)
            by_method = handlers.setdefault(mapping.endpoint, {})
            for method in mapping.methods:
                by_method[method] = handler
        self.app = create_app(handlers, config.server.max_body_bytes, self._status, self.log)
        self.server = HttpServer(self.app, config.server, self.log)

    def _status(self) -> dict[str, Any]:
        summary = dict(self.uplink.status())
        summary["connector"] = {"name": self.name, "type": self.type_name, "port": self.server.port}
        return summary

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def health(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "port": self.server.port,
                "endpoints": len(self.config.mappings)}
