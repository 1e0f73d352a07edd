"""The gateway side of the connector interface: converted data into durable storage, RPC replies out."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from connectors.base import UplinkRateLimited, UplinkUnavailable
from converters.model import ConvertedData
from gateway.northbound.records import encode_text as _encode
from gateway.rate_limit import RateLimited, RequestRateLimit, TokenBuckets
from gateway.receipts import Receipt
from gateway.report_marks import ReportMark
from gateway.statistics.counting import ConnectorCounts
from gateway.storage.base import EventStorage, StorageFailure, StorageFull


def encode_record(data: ConvertedData) -> bytes:
    """The stored form of one converted message; ValueError for non-JSON values.

    It is JSON that parses to ``data.to_record()`` plus ``"dp"`` (each telemetry entry's number of
    values), laid out one part per line so the MQTT packer can splice the parts into a publish
    without parsing them (see :mod:`gateway.northbound.records`). Data of unexpected types is
    stored as plain compact JSON; the packer validates that and dead-letters what is invalid.
    """
    try:
        if _well_typed(data):
            return _lines(data).encode("utf-8")
        return _encode(data.to_record()).encode("utf-8")
    except TypeError as exc:
        raise ValueError(f"device {data.device_name!r}: a value is not JSON-serialisable ({exc})") from None
    except ValueError as exc:
        hint = " (NaN and Infinity are not JSON)" if "float" in str(exc) else ""
        raise ValueError(f"device {data.device_name!r}: {exc}{hint}") from None


def _well_typed(data: ConvertedData) -> bool:
    if type(data.device_name) is not str or type(data.device_type) is not str:
        return False
    if type(data.attributes) is not dict:
        return False
    for entry in data.telemetry:
        if type(entry.ts) is not int or type(entry.values) is not dict:
            return False
    return True


def _lines(data: ConvertedData) -> str:
    """The line layout (records.py parses it): device, type, attributes?, dp + telemetry?, end."""
    parts = ['{"device":', _encode(data.device_name), '\n,"type":', _encode(data.device_type)]
    if data.attributes:
        parts += ['\n,"attributes":', _encode(data.attributes)]
    entries = [entry for entry in data.telemetry if entry.values]
    if entries:
        parts += ['\n,"dp":[', ",".join([str(len(entry.values)) for entry in entries]), ']\n,"telemetry":[\n',
                  "\n,".join([f'{{"ts":{entry.ts},"values":{_encode(entry.values)}}}' for entry in entries]),
                  "\n]"]
    parts.append("\n}")
    return "".join(parts)


def _nothing() -> None:
    pass


class GatewayUplink:
    """Implements :class:`connectors.base.Uplink` over the event storage and the northbound client."""

    def __init__(self, storage: EventStorage, northbound: Any, retry_after: int = 5,
                 rate_limit: RequestRateLimit | None = None) -> None:
        """``rate_limit``: the gateway-wide limit of requests stored (gateway.yaml ``storage.rateLimit``)."""
        self.storage = storage
        self._limit = TokenBuckets(rate_limit) if rate_limit is not None else None
        self.northbound = northbound
        self.retry_after = retry_after
        # wakes an idle MQTT sender (it waits on its session, not on the storage); in-process tests
        # and benchmarks may pass a northbound without one
        self._notify_stored = getattr(northbound, "notify_stored", None) or _nothing

    def send(self, data: Sequence[ConvertedData], receipt: Receipt | None = None,
             marks: Sequence[ReportMark] = ()) -> None:
        payloads = [encode_record(item) for item in data]
        if self._limit is not None:
            try:
                self._limit.take()
            except RateLimited as exc:
                raise self._limited(exc.retry_after) from None
        self._put(payloads, receipt, marks)

    def send_each(self, data: Sequence[ConvertedData]) -> list[UplinkRateLimited | None]:
        """See :meth:`connectors.base.Uplink.send_each`: one commit, one rate-limit token per item;
        the first items get the tokens there are, the rest are refused."""
        payloads = [encode_record(item) for item in data]
        outcomes: list[UplinkRateLimited | None] = [None] * len(payloads)
        if self._limit is not None:
            taken, retry_after = self._limit.take_up_to(len(payloads))
            if taken < len(payloads):
                refused = self._limited(retry_after)
                outcomes[taken:] = [refused] * (len(payloads) - taken)
                payloads = payloads[:taken]
        if payloads:
            self._put(payloads, None, ())
        return outcomes

    def _limited(self, retry_after: int) -> UplinkRateLimited:
        assert self._limit is not None
        limit = self._limit.limit
        return UplinkRateLimited(f"the gateway-wide limit of {limit.requests:g} requests per {limit.per_seconds:g} s "
                                 f"(burst {limit.capacity}, storage.rateLimit) is reached", retry_after)

    def _put(self, payloads: list[bytes], receipt: Receipt | None, marks: Sequence[ReportMark]) -> None:
        try:
            if marks:
                self.storage.put(payloads, receipt, marks)
            elif receipt is None:
                self.storage.put(payloads)
            else:
                self.storage.put(payloads, receipt)
        except StorageFull:
            raise UplinkUnavailable(
                f"storage is full ({self.storage.count()} events wait for ThingsBoard); retry later",
                self.retry_after,
            ) from None
        except StorageFailure as exc:
            raise UplinkUnavailable(f"storage cannot write ({exc}); retry later", self.retry_after) from None
        self._notify_stored()

    def find_receipt(self, scope: str, key: str) -> Receipt | None:
        try:
            return self.storage.find_receipt(scope, key, time.time())
        except StorageFailure as exc:
            raise UplinkUnavailable(f"storage cannot be read ({exc}); retry later", self.retry_after) from None

    def report_marks(self, scope: str) -> list[ReportMark]:
        try:
            return self.storage.report_marks(scope)
        except StorageFailure as exc:
            raise UplinkUnavailable(f"storage cannot be read ({exc})", self.retry_after) from None

    def forget_report_marks(self, scope: str, keys: Sequence[tuple[str, str]]) -> None:
        try:
            self.storage.forget_report_marks(scope, keys)
        except StorageFailure as exc:
            raise UplinkUnavailable(f"storage cannot write ({exc})", self.retry_after) from None

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        self.northbound.publish_rpc_reply(device, request_id, data)

    def for_connector(self, name: str, counts: ConnectorCounts | None = None) -> ConnectorUplink:
        """The uplink handed to connector ``name``: the same, plus who posted through it (activity, stats);
        ``counts``: where its sends are counted for the statistics telemetry (statistics on)."""
        return ConnectorUplink(self, name, counts)

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


class ConnectorUplink:
    """One connector's view of :class:`GatewayUplink`: stores the same way, and notes each device that
    posted through it (inactivity checks, the ``devices`` and ``stats`` gateway RPCs) and, with
    statistics on, what it produced and stored (``counts``)."""

    def __init__(self, shared: GatewayUplink, connector: str, counts: ConnectorCounts | None = None) -> None:
        self.shared = shared
        self.connector = connector
        self.counts = counts
        self.events_produced = 0  # messages stored through this connector since start
        # in-process tests and benchmarks may pass a northbound without activity tracking
        self._posted = getattr(shared.northbound, "device_posted", None)

    def send(self, data: Sequence[ConvertedData], receipt: Receipt | None = None,
             marks: Sequence[ReportMark] = ()) -> None:
        counts = self.counts
        try:
            self.shared.send(data, receipt, marks)
        except Exception:
            if counts is not None:
                counts.refused(data)
            raise
        if counts is not None:
            counts.stored(data)
        self.events_produced += len(data)  # a lost increment under a race only blurs a statistic
        if self._posted is not None:
            self._posted([item.device_name for item in data], self.connector)

    def send_each(self, data: Sequence[ConvertedData]) -> list[UplinkRateLimited | None]:
        counts = self.counts
        try:
            outcomes = self.shared.send_each(data)
        except Exception:
            if counts is not None:
                counts.refused(data)
            raise
        stored = [item for item, outcome in zip(data, outcomes, strict=True) if outcome is None]
        if counts is not None:
            if len(stored) < len(data):
                counts.refused([item for item, outcome in zip(data, outcomes, strict=True) if outcome is not None])
            counts.stored(stored)
        self.events_produced += len(stored)
        if self._posted is not None and stored:
            self._posted([item.device_name for item in stored], self.connector)
        return outcomes

    def publish_rpc_reply(self, device: str, request_id: int, data: Any) -> None:
        self.shared.publish_rpc_reply(device, request_id, data)

    def client_rpc(self, method: str, params: Any, timeout: float) -> Any:
        return self.shared.client_rpc(method, params, timeout)

    def claim(self, device: str, secret_key: str, duration_ms: int) -> None:
        self.shared.claim(device, secret_key, duration_ms)

    def request_attributes(self, device: str, client: bool, keys: list[str], timeout: float) -> dict[str, Any] | None:
        return self.shared.request_attributes(device, client, keys, timeout)

    def status(self) -> dict[str, Any]:
        return self.shared.status()

    def find_receipt(self, scope: str, key: str) -> Receipt | None:
        return self.shared.find_receipt(scope, key)

    def report_marks(self, scope: str) -> list[ReportMark]:
        return self.shared.report_marks(scope)

    def forget_report_marks(self, scope: str, keys: Sequence[tuple[str, str]]) -> None:
        self.shared.forget_report_marks(scope, keys)
