"""Reads the operations sections of the general config: ``admin``, ``logging``, ``reload`` and ``pidFile``."""
from __future__ import annotations

import ipaddress
import os
from typing import Any

from gateway.config.document import Problems, resolve_path
from gateway.config.model import AdminConfig, LoggingConfig, ReloadConfig

_ADMIN = AdminConfig()
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
