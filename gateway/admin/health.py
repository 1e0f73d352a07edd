"""Liveness (``/healthz``) and readiness (``/readyz``) of the daemon, each check named with its state.

* live: the process answers and every thread that does the work reports in — the MQTT sender
  (alive and going round its loop), each connector's HTTP server and downlink workers, the admin
  server itself. A dead thread means only a restart helps.
* ready: the gateway can take data now — the storage answers, its last commit worked and it is not
  full, every connector has started and the daemon is not stopping — and either ThingsBoard is
  connected or the backlog is at most ``admin.readiness.maxBacklog`` events (an outage is ridden
  out in storage until the backlog passes it).
"""
from __future__ import annotations

from typing import Any

Result = tuple[bool, dict[str, Any]]


def liveness(daemon: Any) -> Result:
    """(alive, body) for ``daemon`` (a :class:`gateway.daemon.Daemon`)."""
    checks: dict[str, dict[str, Any]] = {"mqtt_sender": {"ok": bool(daemon.northbound.alive)}}
    for connector in daemon.connectors:
        for part, alive in connector.liveness().items():
            checks[f"connector:{connector.name}:{part}"] = {"ok": bool(alive)}
    ok = all(check["ok"] for check in checks.values())
    return ok, {"status": "ok" if ok else "fail", "checks": checks}


def readiness(daemon: Any) -> Result:
    """(ready, body) for ``daemon``."""
    config = daemon.loaded.gateway
    limit = config.admin.max_ready_backlog
    checks: dict[str, dict[str, Any]] = {}
    try:
        stats = daemon.storage.stats()
    except Exception as exc:  # closed or broken
        stats = None
        checks["storage"] = {"ok": False, "reason": str(exc)}
    if stats is not None:
        events, size = int(stats.get("stored", 0)), int(stats.get("bytes", 0))
        full = events >= config.storage.max_records or size >= config.storage.max_size_mb * 1024 * 1024
        failing = bool(stats.get("failing"))
        storage: dict[str, Any] = {"ok": not (full or failing), "events": events}
        if full:
            storage["reason"] = "storage is full: new data is refused (503)"
        elif failing:
            storage["reason"] = "the last commit failed: new data is refused (503)"
        checks["storage"] = storage
    connected = bool(daemon.northbound.connected)
    checks["thingsboard"] = {"ok": connected, "connected": connected}
    backlog = None if stats is None else int(stats.get("stored", 0))
    checks["backlog"] = {"ok": backlog is not None and backlog <= limit, "events": backlog, "limit": limit}
    started = daemon.running
    checks["started"] = {"ok": started}
    ok = (checks["storage"]["ok"] and started
          and (checks["thingsboard"]["ok"] or checks["backlog"]["ok"]))
    return ok, {"status": "ok" if ok else "fail", "checks": checks}
