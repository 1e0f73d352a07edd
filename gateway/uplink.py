"""The gateway side of the connector interface: converted data into durable storage, RPC replies out."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from connectors.base import UplinkUnavailable
from converters.model import ConvertedData
from gateway.storage.base import EventStorage, StorageFailure, StorageFull


def encode_record(data: ConvertedData) -> bytes:
    """The stored form of one converted message: compact JSON; ValueError for non-JSON values."""
    try:
        return json.dumps(data.to_record(), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except TypeError as exc:
        raise ValueError(f"device {data.device_name!r}: a value is not JSON-serialisable ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"device {data.device_name!r}: {exc} (NaN and Infinity are not JSON)") from None


class GatewayUplink:
    """Implements :class:`connectors.base.Uplink` over the event storage and the northbound client."""

    def __init__(self, storage: EventStorage, northbound: Any, retry_after: int = 5) -> None:
        self.storage = storage
        self.northbound = northbound
        self.retry_after = retry_after

    def send(self, data: Sequence[ConvertedData]) -> None:
        payloads = [encode_record(item) for item in data]
        try:
            self.storage.put(payloads)
        except StorageFull:
            raise UplinkUnavailable(
                f"storage is full ({self.storage.count()} events wait for ThingsBoard); retry later",
                self.retry_after,
            ) from None
        except StorageFailure as exc:
            raise UplinkUnavailable(f"storage cannot write ({exc}); retry later", self.retry_after) from None

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        self.northbound.publish_rpc_reply(device, request_id, data)

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        return self.northbound.client_rpc(method, params, timeout)

    def claim(self, device: str, secret_key: str, duration_ms: int) -> None:
        self.northbound.publish_claim(device, secret_key, duration_ms)

    def request_attributes(self, device: str, client: bool, keys: list[str], timeout: float) -> dict[str, Any] | None:
        if not self.northbound.connected:
            raise UplinkUnavailable("ThingsBoard is not connected; attributes cannot be requested now",
                                    self.retry_after)
        return self.northbound.request_attributes(device, client, keys, timeout)

    def status(self) -> dict[str, Any]:
        try:
            events = self.storage.count()
            storage_ok = True
        except StorageFailure:
            events, storage_ok = -1, False
        return {
            "status": "ok" if storage_ok else "degraded",
            "thingsboard": self.northbound.stats(),
            "storage": {"ok": storage_ok, "events": events},
        }
