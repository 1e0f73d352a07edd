"""Messages to the gateway device itself: RPCs to it and, with remote configuration, its shared attributes.

Both arrive on paho's network thread; nothing here runs a handler there: gateway RPCs go to the
RPC pool, shared attribute updates to the handler's own queue (it must return at once).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from gateway.northbound.inbound import GatewayRpcRequest


class GatewayRpcHandler(Protocol):
    """Answers ThingsBoard's RPCs to the gateway device itself; called on a worker thread."""

    def on_gateway_rpc(self, request_id: int, method: str, params: Any) -> None: ...


class OwnAttributesHandler(Protocol):
    """Takes the gateway device's shared attribute updates and learns of each new session.

    Both are called on the MQTT threads (network, sender) and must only queue work and return.
    """

    def on_connected(self) -> None: ...

    def on_shared_attributes(self, data: dict[str, Any]) -> None: ...


class OwnDevice:
    """Routes what ThingsBoard sends to the gateway device: RPCs to the RPC pool, attributes to their handler.

    ``count`` counts by name (``gateway_rpcs``), ``reply(request_id, data)`` queues an RPC answer.
    """

    def __init__(self, count: Callable[[str], None], reply: Callable[[int, Any], None],
                 logger: logging.Logger) -> None:
        self._count = count
        self._reply = reply
        self.log = logger
        self.rpc_handler: GatewayRpcHandler | None = None
        self.attributes_handler: OwnAttributesHandler | None = None

    def on_gateway_rpc(self, event: GatewayRpcRequest, pool: ThreadPoolExecutor | None) -> None:
        """An RPC to the gateway device: a bad request is answered at once, the rest on ``pool``."""
        self._count("gateway_rpcs")
        if event.problem is not None:
            self.log.info("gateway RPC %d refused: %s", event.request_id, event.problem)
            self._reply(event.request_id, {"error": event.problem, "code": 400})
            return
        handler = self.rpc_handler
        if handler is None or pool is None:
            self._reply(event.request_id, {"error": "Method not found", "code": 404})
            return
        try:
            pool.submit(self._call_gateway_rpc, handler, event)
        except RuntimeError:  # pool already shut down during stop()
            self.log.debug("stopping; dropped gateway RPC %d", event.request_id)

    def _call_gateway_rpc(self, handler: GatewayRpcHandler, event: GatewayRpcRequest) -> None:
        try:
            handler.on_gateway_rpc(event.request_id, event.method, event.params)
        except Exception as exc:
            self.log.exception("gateway RPC %s (id %d) failed", event.method, event.request_id)
            self._reply(event.request_id, {"error": f"gateway error: {exc}", "code": 500})

    def on_shared_attributes(self, data: dict[str, Any]) -> None:
        """Shared attributes of the gateway device changed; ignored without remote configuration."""
        handler = self.attributes_handler
        if handler is None:
            self.log.debug("ignored a shared attribute update of the gateway device (remoteConfiguration is off)")
            return
        handler.on_shared_attributes(data)

    def on_connected(self) -> None:
        """A new MQTT session is up (after its subscriptions)."""
        handler = self.attributes_handler
        if handler is not None:
            try:
                handler.on_connected()
            except Exception:  # never let it break the connection loop
                self.log.exception("remote configuration: cannot start the report for a new session")
