"""The narrow interface between the daemon and a connector.

The daemon owns config, storage, the ThingsBoard client and the lifecycle. A connector gets an
:class:`Uplink` to hand converted data to the gateway, and implements :class:`Connector`. A
connector never imports the MQTT client or the storage.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from converters.model import ConvertedData


class UplinkUnavailable(Exception):
    """The gateway cannot take data now (storage full or failing); answer 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Uplink(Protocol):
    """What a connector may call on the gateway."""

    def send(self, data: Sequence[ConvertedData]) -> None:
        """Store ``data`` durably; return only once it is stored. Raises :class:`UplinkUnavailable`."""
        ...

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        """Answer a server-side RPC for ``device`` to ThingsBoard."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of the gateway (ThingsBoard link, storage) for health endpoints."""
        ...


class Connector(ABC):
    """A connector: started and stopped by the daemon, told about downlink traffic."""

    #: the connector ``type`` named in gateway.yaml
    type_name: str = ""

    def __init__(self, name: str, config: Any, uplink: Uplink) -> None:
        self.name = name
        self.config = config
        self.uplink = uplink

    @abstractmethod
    def start(self) -> None:
        """Start serving; return once the connector accepts traffic. Raise on a fatal error."""

    @abstractmethod
    def stop(self) -> None:
        """Stop accepting new traffic, finish what is in flight, release resources."""

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:  # noqa: B027
        """A shared-attribute update from ThingsBoard for ``device`` (keys to new values)."""

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> bool:
        """A server-side RPC for ``device``; return True when this connector handles it."""
        return False

    def health(self) -> dict[str, Any]:
        """A JSON-ready summary of the connector's state for the health endpoint."""
        return {"name": self.name, "type": self.type_name}
