"""The hot reload's metric families for /metrics: reloads by outcome, the last one's time and success."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

P = "rest_gateway_"


def reload_families(stats: dict[str, Any]) -> Iterator[Metric]:
    """Families from :meth:`gateway.reload.Reloader.stats`."""
    reloads = CounterMetricFamily(P + "config_reloads", "config reloads (SIGHUP, rest-gateway reload, file watch), "
                                  "by outcome: applied, unchanged, invalid, restart_required, failed",
                                  labels=["outcome"])
    for outcome, count in stats["counts"].items():
        reloads.add_metric([outcome], count)
    yield reloads
    loaded = GaugeMetricFamily(P + "config_loaded_timestamp_seconds",
                               "Unix time the running configuration was read (start or last applied reload)")
    loaded.add_metric([], stats["loaded_at"])
    yield loaded
    if stats["last_at"] is not None:
        last = GaugeMetricFamily(P + "config_last_reload_timestamp_seconds", "Unix time of the last reload attempt")
        last.add_metric([], stats["last_at"])
        yield last
        success = GaugeMetricFamily(P + "config_last_reload_success",
                                    "1 when the last reload left the files on disk running (applied or unchanged)")
        success.add_metric([], 1 if stats["last_ok"] else 0)
        yield success
