"""The status page ``GET /`` of the admin listener: one server-rendered HTML page for operators.

Read-only and self-contained (no script, no CDN, no build step): the ThingsBoard link, storage depth,
the delivery rate over the last hour as inline SVG, each endpoint's request and error counts, the
last converter errors with a redacted excerpt of their payload, and the configuration files with
the time they were loaded. It refreshes itself every :data:`REFRESH_SECONDS` (meta refresh, which
re-sends the basic-auth credentials the browser already has).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.admin.history import DeliveryHistory
from gateway.admin.plot import build_plot
from gateway.admin.redact import excerpt, redact

REFRESH_SECONDS = 10
LAST_ERRORS_SHOWN = 20
_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def utc(timestamp: float) -> str:
    """``2026-01-02 03:04:05 UTC``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def endpoint_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """Per endpoint: requests, errors (status >= 400) and converter errors, from a RequestMetrics snapshot."""
    rows: dict[str, dict[str, Any]] = {}
    for (endpoint, _method, status), count in snapshot.get("requests", {}).items():
        row = rows.setdefault(endpoint, {"endpoint": endpoint, "requests": 0, "errors": 0, "converter_errors": 0})
        row["requests"] += count
        if status >= 400:
            row["errors"] += count
    for (endpoint, _reason), count in snapshot.get("converter_errors", {}).items():
        row = rows.setdefault(endpoint, {"endpoint": endpoint, "requests": 0, "errors": 0, "converter_errors": 0})
        row["converter_errors"] += count
    return sorted(rows.values(), key=lambda row: row["endpoint"])


class StatusPage:
    """Renders the page from ``daemon`` (a :class:`gateway.daemon.Daemon`) and keeps the rate history."""

    def __init__(self, daemon: Any, secrets: Callable[[], Iterable[str]]) -> None:
        self.daemon = daemon
        self.secrets = secrets
        self.history = DeliveryHistory(lambda: int(daemon.northbound.stats().get("events_sent", 0)))
        self._env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))

    def start(self) -> None:
        self.history.start()

    def stop(self) -> None:
        self.history.stop()

    def render(self) -> str:
        """The page's HTML."""
        return self._env.get_template("status.html").render(**self.view())

    def view(self) -> dict[str, Any]:
        """Everything the template shows (plain values)."""
        daemon, now = self.daemon, time.time()
        secrets = [s for s in self.secrets() if s]
        connectors, errors = [], []
        for connector in daemon.connectors:
            requests = (connector.metrics() or {}).get("requests") or {}
            connectors.append({"name": connector.name, "type": connector.type_name,
                               "endpoints": endpoint_rows(requests)})
            for item in requests.get("last_errors", []):
                errors.append({"time": item["time"], "when": utc(item["time"]), "connector": connector.name,
                               "endpoint": item["endpoint"], "reason": item["reason"],
                               "message": redact(item["message"], secrets),
                               "excerpt": excerpt(item.get("body", b""), secrets, item.get("truncated", False))})
        errors.sort(key=lambda item: item["time"], reverse=True)
        loaded = daemon.loaded
        return {
            "refresh": REFRESH_SECONDS, "now": utc(now), "started": utc(daemon.started_at),
            "uptime": _duration(now - daemon.started_at), "mqtt": daemon.northbound.stats(),
            "storage": self._storage(),
            "plot": build_plot(self.history.points(), now, self.history.span),
            "connectors": connectors, "errors": errors[:LAST_ERRORS_SHOWN],
            "config": {"general": loaded.gateway.file, "loaded": utc(getattr(loaded, "loaded_at", daemon.started_at)),
                       "connectors": [{"name": entry.name, "type": entry.type, "file": entry.configuration}
                                      for entry, _ in loaded.connectors]},
        }

    def _storage(self) -> dict[str, Any]:
        config = self.daemon.loaded.gateway.storage
        try:
            stats = dict(self.daemon.storage.stats())
            stats["ok"] = not stats.get("failing")
        except Exception as exc:  # closed or broken: the page says so
            stats = {"ok": False, "error": str(exc), "stored": 0, "bytes": 0}
        stats.update(type=config.type, max_records=config.max_records,
                     fill=100.0 * stats.get("stored", 0) / max(config.max_records, 1))
        return stats


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
