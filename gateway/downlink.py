"""Routes ThingsBoard's downlink traffic (attribute updates, RPC) to the connectors."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from connectors.base import Connector, Uplink


class DownlinkRouter:
    """Hands each shared-attribute update to every connector and each RPC to the first that takes it.

    An RPC no connector takes is answered at once with a 404-style error, so ThingsBoard does not
    wait out its timeout.
    """

    def __init__(self, connectors: Sequence[Connector], uplink: Uplink, logger: logging.Logger) -> None:
        self.connectors = connectors
        self.uplink = uplink
        self.log = logger

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        for connector in self.connectors:
            try:
                connector.on_attribute_update(device, data)
            except Exception:
                self.log.exception("connector %s failed on an attribute update for %s", connector.name, device)

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> None:
        for connector in self.connectors:
            try:
                if connector.on_rpc(device, request_id, method, params):
                    return
            except Exception as exc:
                self.log.exception("connector %s failed on RPC %s for %s", connector.name, method, device)
                self.uplink.publish_rpc_reply(device, request_id, {"error": f"gateway error: {exc}", "code": 500})
                return
        self.log.info("no serverSideRpc entry matches device %s, method %s", device, method)
        self.uplink.publish_rpc_reply(
            device, request_id, {"error": f"no serverSideRpc entry matches device {device}, method {method}",
                                 "code": 404})
