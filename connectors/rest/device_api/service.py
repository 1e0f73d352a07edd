"""The device API's state: token registry, per-device downlink mailboxes, poll slots, and the uplink."""
from __future__ import annotations

import logging
import os
from typing import Any

from connectors.base import Uplink
from connectors.rest.device_api.mailbox import Mailboxes, PollSlots
from connectors.rest.device_api.model import REGISTRY_FILE, DeviceApiConfig
from connectors.rest.device_api.registry import TokenRegistry


class DeviceApi:
    """Shared by the HTTP views (requests from devices) and the connector (downlink from ThingsBoard).

    ``state_dir`` holds the registry file of provisioned devices (``device-api.db``); None keeps
    provisioned devices in memory only (tests, or no durable storage).
    """

    def __init__(self, config: DeviceApiConfig, uplink: Uplink, state_dir: str | None,
                 logger: logging.Logger | None = None) -> None:
        self.config = config
        self.uplink = uplink
        self._counts = getattr(uplink, "counts", None)  # statistics on: the connector's byte counts
        self.log = logger or logging.getLogger("connectors.rest.device_api")
        path = os.path.join(state_dir, REGISTRY_FILE) if state_dir else None
        self.registry = TokenRegistry(config.devices, path, self.log)
        self.mailboxes = Mailboxes(config.rpc_ttl_ms / 1000, config.max_pending_keys, config.max_queued_rpc)
        self.slots = PollSlots(config.max_concurrent_polls)
        self.counters = {"telemetry_posts": 0, "attribute_posts": 0, "unauthorized": 0, "bad_requests": 0,
                         "provisioned": 0, "client_rpc": 0, "client_rpc_timeouts": 0, "claims": 0,
                         "firmware_downloads": 0}

    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def received_bytes(self, size: int) -> None:
        """``size`` bytes of a request body arrived from a device over CoAP (statistics
        ``receivedBytesFromDevices``; the HTTP server counts its bodies itself). A no-op with statistics off."""
        if self._counts is not None and size:
            self._counts.received_bytes(size)

    def sent_bytes(self, size: int) -> None:
        """``size`` bytes of an attribute update or RPC reached a device (a long poll answered, a CoAP
        notification acknowledged): statistics ``allBytesSentToDevices``. A no-op with statistics off."""
        if self._counts is not None and size:
            self._counts.sent_bytes(size)

    # ------------------------------------------------------------- downlink from ThingsBoard

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        """Keep a shared-attribute update for the device's next poll (devices without a token: ignored)."""
        if self.registry.has_name(device):
            self.mailboxes.put_attributes(device, data)

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> bool:
        """Queue a server-side RPC for the device's next poll; False when the device has no token here."""
        if not self.registry.has_name(device):
            return False
        self.mailboxes.put_rpc(device, request_id, method, params)
        return True

    # ------------------------------------------------------------- lifecycle

    def release_polls(self) -> None:
        """Answer every waiting poll (503) so the HTTP server can stop without waiting them out."""
        self.mailboxes.close()

    def close(self) -> None:
        self.mailboxes.close()
        self.registry.close()

    def stats(self) -> dict[str, Any]:
        configured, provisioned = self.registry.count()
        return {"base_path": self.config.base_path, "devices": configured, "provisioned_devices": provisioned,
                "polls_waiting": self.slots.active, "polls_refused": self.slots.refused,
                **self.counters, **self.mailboxes.stats()}
