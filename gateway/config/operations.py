"""Reads the operations sections of the general config: admin, logging, statistics, reload, pidFile."""
from __future__ import annotations

import ipaddress
import os
from typing import Any

from gateway.config.document import Problems, resolve_path
from gateway.config.model import AdminConfig, LoggingConfig, ReloadConfig, StatisticsConfig

_ADMIN = AdminConfig()
_STATISTICS = StatisticsConfig()
_RELOAD = ReloadConfig()
LOG_FORMATS = ("text", "json")


def _value(data: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) and kind is not bool:
        return default
    return value if isinstance(value, kind) else default


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_admin(data: Any, problems: Problems) -> AdminConfig:
    """The ``admin`` section (the schema has already reported wrong types)."""
    if not isinstance(data, dict):
        return _ADMIN
    port = _value(data, "port", int, _ADMIN.port)
    enabled = _value(data, "enabled", bool, True) and port != 0
    security = data.get("security") if isinstance(data.get("security"), dict) else {}
    username = _value(security, "username", str, "")
    password = _value(security, "password", str, "")
    readiness = data.get("readiness") if isinstance(data.get("readiness"), dict) else {}
    host = _value(data, "host", str, _ADMIN.host)
    if enabled and not username and not is_loopback(host):
        problems.warn("/admin/host", f"the admin listener on {host} is reachable from other machines "
                      "without authentication (metrics and the status page show endpoints and errors)",
                      "\"security\": {\"username\", \"password\"}, or host 127.0.0.1")
    return AdminConfig(enabled=enabled, host=host, port=port,
                       threads=_value(data, "threads", int, _ADMIN.threads),
                       username=username, password=password,
                       max_ready_backlog=_value(readiness, "maxBacklog", int, _ADMIN.max_ready_backlog))


def read_logging(data: Any, problems: Problems) -> LoggingConfig:
    """The ``logging`` section: its ``format``."""
    if not isinstance(data, dict):
        return LoggingConfig()
    value = data.get("format", "text")
    kind = value.strip().lower() if isinstance(value, str) else "text"
    if kind not in LOG_FORMATS:
        kind = "text"  # the schema has reported it
    return LoggingConfig(format=kind)


def read_statistics(top: Any, under_thingsboard: Any, problems: Problems) -> StatisticsConfig:
    """``statistics`` at the top level, or under ``thingsboard`` where the ThingsBoard IoT Gateway keeps it.

    Both at once is an error: one of them would be silently ignored.
    """
    if isinstance(top, dict) and isinstance(under_thingsboard, dict):
        problems.error("/thingsboard/statistics", "statistics is given both at the top level and under "
                       "thingsboard", "one statistics section: keep either /statistics or /thingsboard/statistics")
        return _STATISTICS
    data = top if isinstance(top, dict) else under_thingsboard
    if not isinstance(data, dict):
        return _STATISTICS
    return StatisticsConfig(enabled=_value(data, "enable", bool, _STATISTICS.enabled),
                            period_seconds=_value(data, "statsSendPeriodInSeconds", int, _STATISTICS.period_seconds))
#: the pid file's name when ``pidFile`` is not set: beside the storage file
DEFAULT_PID_FILE_NAME = "rest-gateway.pid"


def read_reload(data: Any) -> ReloadConfig:
    """The ``reload`` section: ``watch`` and ``intervalSeconds`` (the schema has reported wrong types)."""
    if not isinstance(data, dict):
        return ReloadConfig()
    interval = _value(data, "intervalSeconds", (int, float), _RELOAD.interval_s)
    return ReloadConfig(watch=_value(data, "watch", bool, False), interval_s=float(interval))


def read_pid_file(value: Any, file: str, storage_file: str) -> str:
    """The absolute pid file path: ``pidFile`` relative to ``file``, or beside ``storage_file``."""
    if isinstance(value, str) and value.strip():
        return resolve_path(value.strip(), file)
    return os.path.join(os.path.dirname(os.path.abspath(storage_file)), DEFAULT_PID_FILE_NAME)
