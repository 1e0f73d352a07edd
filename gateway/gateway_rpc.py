"""Answers ThingsBoard's RPCs to the gateway device itself: ping, stats, devices, version, restart.

ThingsBoard sends them on ``v1/devices/me/rpc/request/{id}`` as ``{"method": "gateway_ping", ...}``;
the answer goes to ``v1/devices/me/rpc/response/{id}`` in the reference gateway's shapes
(``{"code": 200, "resp": ...}``, ``{"success": true}``, ``{"error": ..., "code": 404}``). Bare method
names (``ping``) are accepted too. See docs/northbound.md#gateway-rpcs.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway import __version__

#: longest restart delay accepted in ``gateway_restart``'s params (seconds)
MAX_RESTART_DELAY = 86_400
#: how long a restart waits for its own answer to leave before stopping anyway (seconds)
REPLY_FLUSH_TIMEOUT = 5.0


class GatewayLink(Protocol):
    """What the RPCs use of the northbound client (:class:`gateway.northbound.Northbound`)."""

    counters: dict[str, int]

    def publish_own_rpc_reply(self, request_id: int, data: Any) -> None: ...

    def replies_flushed(self, timeout: float) -> bool: ...

    def tracked_devices(self) -> dict[str, str | None]: ...

    @property
    def connected(self) -> bool: ...


class ProducedCount(Protocol):
    """A connector's uplink that counts what it stored (:class:`gateway.uplink.ConnectorUplink`)."""

    events_produced: int


def _stat_key(connector: str, suffix: str) -> str:
    """The reference's statistic name: the connector name lower-cased without spaces, then ``suffix``."""
    return connector.lower().replace(" ", "") + suffix


class GatewayRpc:
    """Runs one gateway RPC per call on the caller's thread and queues its answer.

    ``restart`` stops the daemon cleanly and starts it again (see :meth:`gateway.daemon.Daemon.request_restart`);
    ``stored_events`` counts what waits in storage; ``uplinks`` are the connectors' uplinks by name.
    """

    def __init__(self, link: GatewayLink, uplinks: Mapping[str, ProducedCount], stored_events: Callable[[], int],
                 restart: Callable[[], None], logger: logging.Logger) -> None:
        self.link = link
        self.uplinks = uplinks
        self.stored_events = stored_events
        self.restart = restart
        self.log = logger
        self.started = time.monotonic()
        self._restart_lock = threading.Lock()
        self._restart_pending = False
        self._methods: dict[str, Callable[[Any], Any]] = {
            "ping": self._ping, "stats": self._stats, "devices": self._devices, "version": self._version,
            "restart": self._restart,
        }

    def on_gateway_rpc(self, request_id: int, method: str, params: Any) -> None:
        """Answer ThingsBoard's RPC ``request_id``; a restart happens only after its answer has left."""
        name = method[len("gateway_"):] if method.startswith("gateway_") else method
        call = self._methods.get(name)
        self.log.info("gateway RPC %s (id %d)", method, request_id)
        if call is None:
            answer: Any = self._unsupported(method, name)
        else:
            answer = call(params)
        self.link.publish_own_rpc_reply(request_id, answer)
        if name == "restart" and answer.get("success") is True:
            self._schedule_restart(_restart_delay(params) or 0.0)

    # ---------------------------------------------------------------- the methods

    @staticmethod
    def _ping(params: Any) -> dict[str, Any]:
        return {"code": 200, "resp": "pong"}

    def _stats(self, params: Any) -> dict[str, Any]:
        """The reference's ``eventsProduced`` / ``eventsSent`` (and per connector), since start, plus more."""
        counters = dict(self.link.counters)
        stats: dict[str, Any] = {"eventsProduced": sum(u.events_produced for u in self.uplinks.values()),
                                 "eventsSent": counters.get("events_sent", 0)}
        for name, uplink in self.uplinks.items():
            stats[_stat_key(name, "EventsProduced")] = uplink.events_produced
        try:
            stored: int | None = self.stored_events()
        except Exception:  # a failing storage must not keep ThingsBoard from its stats
            stored = None
        stats.update({
            "eventsStored": stored,
            "deadLettered": counters.get("dead_lettered", 0),
            "reconnects": counters.get("reconnects", 0),
            "devicesDisconnected": counters.get("devices_disconnected", 0),
            "devices": len(self.link.tracked_devices()),
            "uptimeSeconds": round(time.monotonic() - self.started, 1),
        })
        return stats

    def _devices(self, params: Any) -> dict[str, Any]:
        return {"code": 200, "resp": self.link.tracked_devices()}

    @staticmethod
    def _version(params: Any) -> dict[str, Any]:
        # the reference also reports its update server's latest_version; this gateway checks for none
        return {"code": 200, "resp": {"current_version": __version__, "latest_version": None}}

    def _restart(self, params: Any) -> dict[str, Any]:
        if _restart_delay(params) is None:
            return {"error": f"gateway_restart params must be a delay in seconds (0-{MAX_RESTART_DELAY}) or "
                             f"empty, not {params!r}", "code": 400}
        with self._restart_lock:
            if self._restart_pending:
                return {"error": "a restart is already scheduled", "code": 409}
            self._restart_pending = True
        return {"success": True}

    @staticmethod
    def _unsupported(method: str, name: str) -> dict[str, Any]:
        if name == "reboot":
            return {"error": "gateway_reboot is not supported: rest-gateway does not reboot the host "
                             "(gateway_restart restarts the gateway)", "code": 501}
        if name == "update":
            return {"error": "gateway_update is not supported: update the package, then gateway_restart",
                    "code": 501}
        return {"error": "Method not found", "code": 404, "method": method}

    # ---------------------------------------------------------------- restart

    def _schedule_restart(self, delay: float) -> None:
        self.log.warning("restart requested by ThingsBoard (gateway_restart), in %g s", delay)
        timer = threading.Timer(delay, self._restart_now)
        timer.name = "rgw-restart"
        timer.daemon = True
        timer.start()

    def _restart_now(self) -> None:
        if not self.link.replies_flushed(REPLY_FLUSH_TIMEOUT):
            self.log.warning("restarting before the gateway_restart answer could be sent to ThingsBoard")
        self.restart()


def _restart_delay(params: Any) -> float | None:
    """The reference's ``gateway_restart`` params: a number of seconds, or nothing (``{}``, null, "")."""
    if params is None or params == {} or params == "" or params == "{}":
        return 0.0
    if isinstance(params, bool) or not isinstance(params, int | float):
        return None
    return float(params) if 0 <= params <= MAX_RESTART_DELAY else None
