"""Relays ThingsBoard attribute updates and RPCs to HTTP targets per rest.json, and answers RPCs."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.base import Uplink
from connectors.rest.downlink.dispatcher import DeviceDispatcher, DispatcherFull
from connectors.rest.downlink.model import (
    AttributeUpdateEntry,
    DownlinkEntry,
    EntryError,
    RpcEntry,
    parse_attribute_update,
    parse_rpc,
)
from connectors.rest.model import RestConfig
from converters.casting import CastError
from converters.expressions import MissingValue
from gateway.config.locate import join
from gateway.stats import Histogram

if TYPE_CHECKING:
    from connectors.rest.downlink.relay import Outcome, Relay

COUNTERS = ("attribute_updates_relayed", "attribute_updates_failed", "attribute_keys_unmatched",
            "rpc_replied", "rpc_sent_no_reply", "rpc_failed", "rpc_unmatched", "rejected_busy")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def reply_result(body: bytes) -> Any:
    """An RPC ``result``: the parsed JSON body, or the body's text when it is not JSON."""
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        return text
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return text


def rpc_reply(outcome: Outcome) -> dict[str, Any]:
    """The reply ThingsBoard gets for a relayed RPC's outcome."""
    if outcome.ok:
        return {"result": reply_result(outcome.body)}
    if outcome.kind == "http":
        return {"error": outcome.reason, "code": outcome.status}
    if outcome.kind == "timeout":
        return {"error": "timeout", "code": 408}
    if outcome.kind == "connection":
        return {"error": outcome.reason, "code": 503}
    return {"error": outcome.reason, "code": 502}


@dataclass
class DownlinkEntries:
    """One config's downlink rules, parsed."""

    attribute_updates: list[AttributeUpdateEntry]
    rpc: list[RpcEntry]
    connector_base: str  # server.baseUrl: what relative URLs are resolved against


class DownlinkService:
    """The REST connector's downlink: matching, rendering, relaying (ordered per device) and replies."""

    def __init__(self, config: RestConfig, uplink: Uplink, own_address: Callable[[], str],
                 logger: logging.Logger, workers: int | None = None) -> None:
        self.uplink = uplink
        #: statistics on: where relayed bodies that reached their target are counted (allBytesSentToDevices)
        self._counts = getattr(uplink, "counts", None)
        self.log = logger
        self.own_address = own_address
        self.attribute_entries: list[AttributeUpdateEntry] = []
        self.rpc_entries: list[RpcEntry] = []
        self.connector_base = ""
        self.use_entries(self.prepare_entries(config))
        self._stop = threading.Event()
        self._relay: Relay | None = None  # made at the first relay (see relay)
        self._relay_lock = threading.Lock()
        kwargs = {"workers": workers} if workers else {}
        self.dispatcher = DeviceDispatcher(logger, **kwargs)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.relays: dict[tuple[str, str], int] = {}  # (entry pointer, outcome kind) → relays
        self.relay_latency: dict[str, Histogram] = {}  # entry pointer → seconds per relay (all tries)
        self._lock = threading.Lock()

    @staticmethod
    def prepare_entries(config: RestConfig) -> DownlinkEntries:
        """The parsed attributeUpdates and serverSideRpc entries of ``config``; ValueError if any is invalid."""
        prefix = "/requestsMapping" if config.format == "current" else ""
        problems: list[str] = []
        entries = DownlinkEntries([], [], config.server.base_url)
        for index, raw in enumerate(config.attribute_updates):
            pointer = join(prefix, "attributeUpdates", index)
            try:
                entries.attribute_updates.append(parse_attribute_update(raw, pointer, config.file))
            except EntryError as exc:
                problems.append(f"{pointer}: {exc}")
        for index, raw in enumerate(config.server_side_rpc):
            pointer = join(prefix, "serverSideRpc", index)
            try:
                entries.rpc.append(parse_rpc(raw, pointer, config.file))
            except EntryError as exc:
                problems.append(f"{pointer}: {exc}")
        if problems:
            raise ValueError("invalid downlink entries: " + "; ".join(problems))
        return entries

    def use_entries(self, entries: DownlinkEntries) -> None:
        """Match later downlink messages against ``entries`` (a reload); relays queued already keep theirs."""
        self.attribute_entries, self.rpc_entries = entries.attribute_updates, entries.rpc
        self.connector_base = entries.connector_base

    def relay(self) -> Relay:
        """The HTTP client of the relays, made on first use: a rest.json without attributeUpdates and
        serverSideRpc never loads requests and urllib3 (~5 MB of RSS)."""
        with self._relay_lock:
            if self._relay is None:
                from connectors.rest.downlink.relay import Relay

                self._relay = Relay(self._stop)
            return self._relay

    @property
    def alive(self) -> bool:
        return self.dispatcher.alive

    @property
    def enabled(self) -> bool:
        return bool(self.attribute_entries or self.rpc_entries)

    def start(self) -> None:
        self._stop.clear()
        self.dispatcher.start()
        for entry in (*self.attribute_entries, *self.rpc_entries):
            base = entry.base_for(self.connector_base, self.own_address())
            if base is not None:
                self.log.info("%s: relative URL %s is resolved against %s", entry.pointer, entry.url.text, base)

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, let queued work finish (up to ``timeout``), close HTTP sessions."""
        self.dispatcher.stop(timeout)
        self._stop.set()
        if self._relay is not None:
            self._relay.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = dict(self.counters)
        stats["pending"] = self.dispatcher.pending
        return stats

    def metrics(self) -> dict[str, Any]:
        """Counters, relays by (entry, outcome) and relay latencies by entry, for the admin collector."""
        with self._lock:
            return {"counters": dict(self.counters), "pending": self.dispatcher.pending,
                    "relays": dict(self.relays),
                    "latency": {pointer: h.snapshot() for pointer, h in self.relay_latency.items()}}

    def _relayed(self, entry: DownlinkEntry, outcome: str, seconds: float | None,
                 body: bytes | None = None) -> None:
        """Count one relay of ``entry`` ending in ``outcome`` (an Outcome kind, or ``template``).

        ``body`` (the request body relayed) counts as sent to the device when its target answered
        (``ok`` or ``http``), once per relay however many tries it took.
        """
        if body and self._counts is not None and outcome in ("ok", "http"):
            self._counts.sent_bytes(len(body))
        with self._lock:
            key = (entry.pointer, outcome)
            self.relays[key] = self.relays.get(key, 0) + 1
            if seconds is not None:
                histogram = self.relay_latency.get(entry.pointer)
                if histogram is None:
                    histogram = self.relay_latency[entry.pointer] = Histogram()
                histogram.observe(seconds)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def _url(self, entry: DownlinkEntry, context: dict[str, Any]) -> str:
        return entry.resolve(entry.url.render_url(context), self.connector_base, self.own_address())

    # ------------------------------------------------------------------ attribute updates

    def on_attribute_update(self, device: str, data: dict[str, Any]) -> None:
        """Queue one request per (key, matching entry); every key of the update is relayed."""
        for key, value in data.items():
            matched = False
            for entry in self.attribute_entries:
                if entry.matches(device, key):
                    matched = True
                    context = {"deviceName": device, "attributeKey": key, "attributeValue": value}
                    try:
                        self.dispatcher.submit(device, lambda e=entry, c=context: self._relay_attribute(e, c))
                    except DispatcherFull as exc:
                        self._count("rejected_busy")
                        self.log.error("attribute update %s of device %s not relayed: %s", key, device, exc)
            if not matched:
                self._count("attribute_keys_unmatched")
                self.log.debug("no attributeUpdates entry matches device %s, attribute %s", device, key)

    def _relay_attribute(self, entry: AttributeUpdateEntry, context: dict[str, Any]) -> None:
        device, key = context["deviceName"], context["attributeKey"]
        try:
            url = self._url(entry, context)
            body = entry.render_body(context)
        except (MissingValue, CastError, ValueError) as exc:
            self._count("attribute_updates_failed")
            self._relayed(entry, "template", None)
            self.log.error("attribute %s of device %s not relayed (%s): cannot fill the templates: %s",
                           key, device, entry.pointer, exc)
            return
        started = time.monotonic()
        outcome = self.relay().send(url, entry.options, body)
        self._relayed(entry, outcome.kind, time.monotonic() - started, body)
        if outcome.ok:
            self._count("attribute_updates_relayed")
            self.log.debug("attribute %s of device %s relayed to %s %s: %s", key, device,
                           entry.options.method, url, outcome.describe())
        else:
            self._count("attribute_updates_failed")
            self.log.error("attribute %s of device %s not relayed to %s %s after %d tries: %s", key, device,
                           entry.options.method, url, outcome.tries, outcome.describe())

    # ------------------------------------------------------------------ RPC

    def on_rpc(self, device: str, request_id: int, method: str, params: Any) -> bool:
        """Queue the RPC for the first matching entry; False when no entry matches (the caller replies 404)."""
        entry = next((e for e in self.rpc_entries if e.matches(device, method)), None)
        if entry is None:
            self._count("rpc_unmatched")
            return False
        context = {"deviceName": device, "methodName": method, "requestId": request_id,
                   "restId": request_id, "params": params}
        try:
            self.dispatcher.submit(device, lambda: self._relay_rpc(entry, context))
        except DispatcherFull as exc:
            self._count("rejected_busy")
            self.log.error("RPC %s (id %s) for device %s not relayed: %s", method, request_id, device, exc)
            if entry.response_timeout is not None:
                self._reply(device, request_id, {"error": f"gateway busy: {exc}", "code": 503})
        return True

    def _relay_rpc(self, entry: RpcEntry, context: dict[str, Any]) -> None:
        device, request_id, method = context["deviceName"], context["requestId"], context["methodName"]
        deadline = time.monotonic() + entry.response_timeout if entry.response_timeout is not None else None
        try:
            url = self._url(entry, context)
            body = entry.render_body(context)
        except (MissingValue, CastError, ValueError) as exc:
            self._count("rpc_failed")
            self._relayed(entry, "template", None)
            self.log.error("RPC %s (id %s) for device %s not relayed (%s): cannot fill the templates: %s",
                           method, request_id, device, entry.pointer, exc)
            if entry.response_timeout is not None:
                self._reply(device, request_id, {"error": f"cannot build the request: {exc}", "code": 400})
            return
        started = time.monotonic()
        outcome = self.relay().send(url, entry.options, body, deadline)
        self._relayed(entry, outcome.kind, time.monotonic() - started, body)
        level = logging.DEBUG if outcome.ok else logging.ERROR
        self.log.log(level, "RPC %s (id %s) for device %s relayed to %s %s after %d tries: %s", method,
                     request_id, device, entry.options.method, url, outcome.tries, outcome.describe())
        if not outcome.ok:
            self._count("rpc_failed")
        if entry.response_timeout is None:
            if outcome.ok:
                self._count("rpc_sent_no_reply")
            return
        self._reply(device, request_id, rpc_reply(outcome))

    def _reply(self, device: str, request_id: int, data: Any) -> None:
        try:
            self.uplink.publish_rpc_reply(device, request_id, data)
        except ValueError as exc:
            self.log.error("reply to RPC %s of device %s cannot be sent: %s", request_id, device, exc)
            self.uplink.publish_rpc_reply(device, request_id, {"error": f"reply not sendable: {exc}",
                                                               "code": 502})
            return
        self._count("rpc_replied")
