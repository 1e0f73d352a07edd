"""The narrow interface between the daemon and a connector.

The daemon owns config, storage, the ThingsBoard client and the lifecycle. A connector gets an
:class:`Uplink` to hand converted data to the gateway, and implements :class:`Connector`. A
connector never imports the MQTT client or the storage.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from converters.model import ConvertedData
from gateway.receipts import Receipt
from gateway.report_marks import ReportMark


class UplinkUnavailable(Exception):
    """The gateway cannot take data now (storage full or failing); answer 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class UplinkRateLimited(UplinkUnavailable):
    """The gateway-wide request rate limit is reached; answer 429 with Retry-After."""


class RestartRequired(Exception):
    """A new config changes what only a restart can apply; ``changes`` names each (for the log)."""

    def __init__(self, changes: Sequence[str]) -> None:
        super().__init__("; ".join(changes))
        self.changes = list(changes)


#: applies a prepared reload: must not fail, must not block on traffic (see Connector.prepare_reload)
ApplyReload = Callable[[], None]


class Uplink(Protocol):
    """What a connector may call on the gateway."""

    def send(self, data: Sequence[ConvertedData], receipt: Receipt | None = None,
             marks: Sequence[ReportMark] = ()) -> None:
        """Store ``data`` durably; return only once it is stored. Raises :class:`UplinkUnavailable`.

        ``receipt`` (the answer to an Idempotency-Key request) is stored with the data, atomically;
        so are ``marks`` (reportStrategy state, see :mod:`gateway.report_marks`) where the storage keeps them.
        """
        ...

    def send_each(self, data: Sequence[ConvertedData]) -> list[UplinkRateLimited | None]:
        """Store each item of ``data`` as a request of its own, together: one commit, but one token each
        from the gateway-wide rate limit (``storage.rateLimit``). The items past the limit are not stored:
        their place in the result holds the :class:`UplinkRateLimited`; the others' hold None once stored.

        Raises :class:`UplinkUnavailable` (nothing stored) as ``send`` does, and ValueError before any
        token is taken when an item cannot be encoded.
        """
        ...

    def report_marks(self, scope: str) -> list[ReportMark]:
        """The reportStrategy marks stored in ``scope`` (none with memory storage). Raises UplinkUnavailable."""
        ...

    def forget_report_marks(self, scope: str, keys: Sequence[tuple[str, str]]) -> None:
        """Delete the marks of ``keys`` ((kind, key) pairs) of every device in ``scope``. Raises UplinkUnavailable."""
        ...

    def find_receipt(self, scope: str, key: str) -> Receipt | None:
        """The unexpired receipt stored with earlier data for ``key`` in ``scope``, if any."""
        ...

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        """Answer a server-side RPC for ``device`` to ThingsBoard."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of the gateway (ThingsBoard link, storage) for health endpoints."""
        ...

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        """The gateway's own client-side RPC to ThingsBoard (``v1/devices/me/rpc/request/{n}``): its answer.

        Raises TimeoutError when no answer arrives within ``timeout`` seconds, ValueError for non-JSON params.
        """
        ...

    def claim(self, device: str, secret_key: str, duration_ms: int) -> None:
        """Send claiming info for ``device`` on ``v1/gateway/claim`` (queued in memory, not confirmed)."""
        ...

    def request_attributes(self, device: str, client: bool, keys: list[str], timeout: float) -> dict[str, Any] | None:
        """Fetch ``device``'s client (``client`` True) or shared attributes ``keys`` from ThingsBoard.

        Returns key → value for the keys found, None when ThingsBoard did not answer within ``timeout``
        seconds. Raises :class:`UplinkUnavailable` when ThingsBoard is not connected, ValueError for
        an empty device name or key list. Blocks only the calling thread.
        """
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

    def prepare_reload(self, config: Any, extension_paths: Sequence[str]) -> ApplyReload:
        """Build everything ``config`` (a new, valid config of this type) needs, without using it yet.

        Returns a function that switches to it atomically; the daemon calls it only once every
        connector has prepared, so a reload applies everywhere or nowhere. Raises
        :class:`RestartRequired` naming the changes a running connector cannot take; any other
        exception means the config cannot be used. The default: every change needs a restart.
        """
        if config == self.config:
            return lambda: None
        raise RestartRequired([f"connector {self.name!r}: its type {self.type_name!r} cannot reload a changed config"])

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:  # noqa: B027
        """A shared-attribute update from ThingsBoard for ``device`` (keys to new values)."""

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> bool:
        """A server-side RPC for ``device``; return True when this connector handles it."""
        return False

    def health(self) -> dict[str, Any]:
        """A JSON-ready summary of the connector's state for the health endpoint."""
        return {"name": self.name, "type": self.type_name}

    def liveness(self) -> dict[str, bool]:
        """Each of the connector's threads or servers (by name) and whether it is alive, for /healthz."""
        return {}

    def metrics(self) -> dict[str, Any]:
        """Plain counters for the admin /metrics collector, read at scrape time (see docs/operations.md)."""
        return {}
