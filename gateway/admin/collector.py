"""The Prometheus collector: reads the counters storage, the MQTT link and each connector keep, at scrape time.

Nothing is added to the request path here: :class:`GatewayCollector` is registered on a dedicated
``CollectorRegistry`` and turns the plain dicts of ``stats()`` / ``metrics()`` into metric families
when ``/metrics`` is scraped. The device API's ``stats()`` is exported key by key (see
:func:`device_api_families`), so counters a transport adds there (CoAP observations...) appear
without a change here. The metric list is in docs/operations.md.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.admin.reload_metrics import reload_families
from gateway.stats import LATENCY_BUCKETS

P = "rest_gateway_"
#: device API stats() keys that are levels, not running totals (any other numeric key is a counter)
DEVICE_API_GAUGES = frozenset({"devices", "provisioned_devices", "polls_waiting", "devices_with_pending_updates",
                               "rpc_waiting_for_poll", "observations_active", "observers",
                               "coap_observations_attributes", "coap_observations_rpc",
                               "coap_rate_limited_addresses"})
_MQTT_COUNTERS = (("publishes", "published", "MQTT publishes sent (stored events, RPC replies, connects)"),
                  ("pubacks", "acked", "PUBACKs received with a success code"),
                  ("publishes_rejected", "rejected", "PUBACKs with an error reason code"),
                  ("events_sent", "events_sent", "stored events published (duplicates after a reconnect included)"),
                  ("events_dead_lettered", "dead_lettered", "events moved to the dead-letter file"),
                  ("connects", "connects", "sessions established with ThingsBoard"),
                  ("reconnects", "reconnects", "sessions established after the first one"),
                  ("rate_limited", "rate_limited", "publishes delayed by the rate limits"),
                  ("duplicates_resent", "duplicates_resent", "events published again after a lost session"),
                  ("rpc_replies_dropped", "rpc_replies_dropped", "RPC replies dropped while ThingsBoard was away"),
                  ("gateway_rpcs", "gateway_rpcs", "RPCs to the gateway device itself (gateway_ping, ...)"),
                  ("devices_disconnected", "devices_disconnected", "devices disconnected for inactivity"))


def histogram(name: str, doc: str, labels: Sequence[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(P + name, doc, labels=list(labels))


def add_histogram(family: HistogramMetricFamily, labels: Sequence[str], bounds: Sequence[float],
                  counts: Sequence[int], total: float) -> None:
    """Add one labelled histogram from per-bucket (not cumulative) ``counts``: len(bounds) + 1 of them."""
    buckets, running = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    family.add_metric(list(labels), buckets, total)


class GatewayCollector:
    """Exports the daemon's counters; ``daemon`` is a :class:`gateway.daemon.Daemon`."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        info = GaugeMetricFamily(P + "start_time_seconds", "Unix time the gateway started")
        info.add_metric([], daemon.started_at)
        yield info
        yield from storage_families(daemon.storage, daemon.loaded.gateway.storage)
        yield from mqtt_families(daemon.northbound)
        reloader = getattr(daemon, "reloader", None)
        if reloader is not None:
            yield from reload_families(reloader.stats())
        for connector in daemon.connectors:
            yield from connector_families(connector.name, connector.metrics())


def storage_families(storage: Any, config: Any) -> Iterator[Metric]:
    try:
        stats = storage.stats()
    except Exception:  # closed or failing: say so instead of failing the scrape
        stats = None
    up = GaugeMetricFamily(P + "storage_up", "1 while the event storage answers and its last commit worked")
    up.add_metric([], 0 if stats is None or stats.get("failing") else 1)
    yield up
    if stats is None:
        return
    gauges = (("storage_events", "stored", "events stored, waiting for ThingsBoard's PUBACK"),
              ("storage_bytes", "bytes", "estimated bytes of the stored events (counted against max_size_mb)"),
              ("storage_oldest_event_age_seconds", "oldest_age_s",
               "seconds the oldest stored event has waited (0 when empty; +-1 s)"))
    for name, key, doc in gauges:
        family = GaugeMetricFamily(P + name, doc)
        family.add_metric([], stats.get(key, 0))
        yield family
    limit = GaugeMetricFamily(P + "storage_max_events", "max_records_count: puts are refused beyond it")
    limit.add_metric([], config.max_records)
    yield limit
    counters = (("storage_puts", "put_count", "requests' data stored (one put per request)"),
                ("storage_puts_refused_full", "rejected_full", "puts refused because storage was full (503)"),
                ("storage_put_failures", "failures", "puts that failed to write (503)"),
                ("storage_commits", "commits", "sqlite group commits (one fsync each)"))
    for name, key, doc in counters:
        if key in stats:
            family = CounterMetricFamily(P + name, doc)
            family.add_metric([], stats[key])
            yield family
    latency = getattr(storage, "commit_latency", None)
    if latency is not None:
        family = histogram("storage_commit_duration_seconds", "seconds per sqlite group commit", [])
        add_histogram(family, [], *latency.snapshot())
        yield family


def mqtt_families(northbound: Any) -> Iterator[Metric]:
    stats = northbound.stats()
    connected = GaugeMetricFamily(P + "mqtt_connected", "1 while the MQTT session to ThingsBoard is up")
    connected.add_metric([], 1 if stats["connected"] else 0)
    yield connected
    for name, key, doc in _MQTT_COUNTERS:
        family = CounterMetricFamily(P + "mqtt_" + name, doc)
        family.add_metric([], stats.get(key, 0))
        yield family
    waited = CounterMetricFamily(P + "mqtt_rate_limit_wait_seconds", "seconds publishes waited for rate limits")
    waited.add_metric([], northbound.rate_limit_wait)
    yield waited
    pending = GaugeMetricFamily(P + "mqtt_pending_rpc_replies", "RPC replies and claims waiting to be sent")
    pending.add_metric([], stats.get("pending_rpc_replies", 0))
    yield pending
    family = histogram("mqtt_puback_duration_seconds", "seconds from publish to PUBACK", [])
    add_histogram(family, [], *northbound.puback_latency.snapshot())
    yield family


def connector_families(name: str, metrics: dict[str, Any]) -> Iterator[Metric]:
    requests = metrics.get("requests")
    if requests is not None:
        yield from request_families(name, requests)
    downlink = metrics.get("downlink")
    if downlink is not None:
        yield from downlink_families(name, downlink)
    device_api = metrics.get("device_api")
    if device_api is not None:
        yield from device_api_families(name, device_api)
    forwarded = metrics.get("client_address")
    if forwarded is not None:
        yield from client_address_families(name, forwarded)
    waits = metrics.get("response_waits")
    if waits is not None:
        yield from response_wait_families(name, waits)


def response_wait_families(connector: str, stats: dict[str, int]) -> Iterator[Metric]:
    """Requests waiting for ThingsBoard's answer (``response.responseExpected``), their bound and outcomes."""
    waiting = GaugeMetricFamily(P + "response_waits", "requests waiting for ThingsBoard's answer "
                                "(responseExpected)", labels=["connector"])
    waiting.add_metric([connector], stats["waiting"])
    yield waiting
    limit = GaugeMetricFamily(P + "response_waits_limit", "maxWaitingResponses", labels=["connector"])
    limit.add_metric([connector], stats["limit"])
    yield limit
    outcomes = CounterMetricFamily(P + "response_waits_outcomes", "requests that waited for ThingsBoard's answer, "
                                   "by outcome: answered, timeouts (408) or refused (503: maxWaitingResponses "
                                   "already waited)", labels=["connector", "outcome"])
    for outcome in ("answered", "timeouts", "refused"):
        outcomes.add_metric([connector, outcome], stats[outcome])
    yield outcomes


def client_address_families(connector: str, counts: dict[str, int]) -> Iterator[Metric]:
    """What trustedProxies did: client addresses taken from a trusted proxy, spoofed headers ignored."""
    family = CounterMetricFamily(P + "http_forwarded_for", "requests with X-Forwarded-For (or another forwarding "
                                 "header), by outcome: forwarded (a trusted proxy named the client) or "
                                 "untrusted_header (ignored: the peer is not in trustedProxies)",
                                 labels=["connector", "outcome"])
    for outcome, count in sorted(counts.items()):
        family.add_metric([connector, outcome], count)
    yield family


def request_families(connector: str, snap: dict[str, Any]) -> Iterator[Metric]:
    family = CounterMetricFamily(P + "http_requests", "HTTP requests answered, by endpoint, method and status",
                                 labels=["connector", "endpoint", "method", "status"])
    for (endpoint, method, status), count in sorted(snap["requests"].items()):
        family.add_metric([connector, endpoint, method, str(status)], count)
    yield family
    latency = histogram("http_request_duration_seconds", "seconds from request to answer, by endpoint",
                        ["connector", "endpoint"])
    for endpoint, values in sorted(snap["latency"].items()):
        add_histogram(latency, [connector, endpoint], LATENCY_BUCKETS, values[:-1], values[-1])
    yield latency
    errors = CounterMetricFamily(P + "converter_errors", "requests refused with 400: data could not be converted",
                                 labels=["connector", "endpoint", "reason"])
    for (endpoint, reason), count in sorted(snap["converter_errors"].items()):
        errors.add_metric([connector, endpoint, reason], count)
    yield errors


def downlink_families(connector: str, snap: dict[str, Any]) -> Iterator[Metric]:
    relays = CounterMetricFamily(P + "downlink_relays", "attribute updates and RPCs relayed to HTTP targets",
                                 labels=["connector", "entry", "outcome"])
    for (entry, outcome), count in sorted(snap["relays"].items()):
        relays.add_metric([connector, entry, outcome], count)
    yield relays
    latency = histogram("downlink_relay_duration_seconds", "seconds per relay, all tries", ["connector", "entry"])
    for entry, (bounds, counts, total) in sorted(snap["latency"].items()):
        add_histogram(latency, [connector, entry], bounds, counts, total)
    yield latency
    pending = GaugeMetricFamily(P + "downlink_pending", "relays queued or running", labels=["connector"])
    pending.add_metric([connector], snap["pending"])
    yield pending
    busy = CounterMetricFamily(P + "downlink_rejected_busy", "downlink messages refused: the queue was full",
                               labels=["connector"])
    busy.add_metric([connector], snap["counters"].get("rejected_busy", 0))
    yield busy


def device_api_families(connector: str, stats: dict[str, Any]) -> Iterator[Metric]:
    """``rest_gateway_device_api_<key>`` for every numeric key of the device API's stats().

    Keys in :data:`DEVICE_API_GAUGES` are gauges; every other numeric key is a counter (``_total``).
    """
    for key, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = P + "device_api_" + "".join(c if c.isalnum() else "_" for c in key)
        if key in DEVICE_API_GAUGES:
            family: Metric = GaugeMetricFamily(name, f"device API: {key}", labels=["connector"])
        else:
            family = CounterMetricFamily(name, f"device API: {key}", labels=["connector"])
        family.add_metric([connector], value)
        yield family


def exporter(daemon: Any) -> Any:
    """A callable giving the Prometheus text of ``daemon``'s metrics (a registry of its own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(daemon))

    def render() -> bytes:
        return generate_latest(registry)

    return render
