"""Reads the general config (gateway.yaml / .json, ThingsBoard IoT Gateway style) into GatewayConfig."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from gateway.config.document import Problems, check_readable_file, resolve_path
from gateway.config.env_secrets import resolve_env_secrets
from gateway.config.locate import join
from gateway.config.model import (
    ConnectorEntry,
    DeviceActivityConfig,
    GatewayConfig,
    RateLimits,
    StorageConfig,
    ThingsBoardConfig,
    TlsConfig,
)
from gateway.config.operations import read_admin, read_logging, read_pid_file, read_reload, read_statistics
from gateway.config.schema_check import check_schema, load_schema, schema_path
from gateway.rate_limit import read_rate_limit

SCHEMA_FILE = schema_path(__file__, "general_schema.json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STORAGE_TYPES = ("sqlite", "memory")
DURABILITY_LEVELS = ("power", "process")
ENV_HOST, ENV_PORT, ENV_TOKEN = "TB_GW_HOST", "TB_GW_PORT", "TB_GW_ACCESS_TOKEN"
PLACEHOLDER_TOKEN = "YOUR_GATEWAY_ACCESS_TOKEN"
_TB, _STORAGE = ThingsBoardConfig(), StorageConfig()
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
QOS_REASON = ("ThingsBoard (3.7+) treats a QoS 0 publish on v1/gateway/* as malformed and closes the "
              "device session, and its MQTT transport supports QoS 1 at most")


def read_general(data: Any, file: str, problems: Problems, env: Mapping[str, str] | None = None
                 ) -> GatewayConfig | None:
    """Validate general-config ``data`` read from ``file``; ``None`` when there are errors.

    ``env`` (default ``os.environ``) supplies the TB_GW_HOST, TB_GW_PORT and TB_GW_ACCESS_TOKEN overrides.
    """
    env = os.environ if env is None else env
    data = resolve_env_secrets(data, problems, env)  # ${ENV:NAME} in thingsboard.security secrets
    check_schema(data, load_schema(SCHEMA_FILE), problems)
    if not isinstance(data, dict):
        return None
    tb = _thingsboard(_obj(data.get("thingsboard")), file, problems, env)
    storage = _storage(_obj(data.get("storage")), file, problems)
    connectors = tuple(entry for _, entry in connector_entries(data, file, problems))
    level = data.get("logLevel", "INFO")
    log_level = level.strip().upper() if isinstance(level, str) else "INFO"
    if log_level not in LOG_LEVELS:
        problems.error("/logLevel", f"unknown log level {level!r}", ", ".join(LOG_LEVELS))
    paths = []
    for index, folder in enumerate(_list(data.get("extensionPaths"))):
        if isinstance(folder, str) and folder:
            path = resolve_path(folder, file)
            if not os.path.isdir(path):
                problems.error(join("/extensionPaths", index), f"extension folder {path} does not exist",
                               "an existing folder (relative paths are relative to this file)")
            paths.append(path)
    admin = read_admin(data.get("admin"), problems)
    logging_config = read_logging(data.get("logging"), problems)
    statistics = read_statistics(data.get("statistics"), _obj(data.get("thingsboard")).get("statistics"), problems)
    if problems.errors:
        return None
    return GatewayConfig(file=file, thingsboard=tb, storage=storage, connectors=connectors,
                         log_level=log_level, extension_paths=tuple(paths), admin=admin,
                         logging=logging_config, statistics=statistics, reload=read_reload(data.get("reload")),
                         pid_file=read_pid_file(data.get("pidFile"), file, storage.data_file_path),
                         cpus=_cpus(data.get("cpus", "auto")))


def _cpus(value: Any) -> str | tuple[int, ...]:
    """``cpus`` as validated by the schema: "auto", "all" or the CPU numbers in ascending order."""
    return tuple(sorted(value)) if isinstance(value, list) else value


def _obj(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _get(data: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) and kind is not bool:
        return default
    return value if isinstance(value, kind) else default


def _thingsboard(data: dict, file: str, problems: Problems, env: Mapping[str, str]) -> ThingsBoardConfig:
    qos = _get(data, "qos", int, 1)
    if qos != 1:
        problems.error("/thingsboard/qos", f"qos {qos} is not supported", f"1: {QOS_REASON}")
    host = _get(data, "host", str, _TB.host)
    port = _get(data, "port", int, _TB.port)
    if env.get(ENV_HOST):
        host = env[ENV_HOST]
    if env.get(ENV_PORT):
        text = env[ENV_PORT].strip()
        if text.isdigit() and 1 <= int(text) <= 65535:
            port = int(text)
        else:
            problems.error("/thingsboard/port",
                           f"environment variable {ENV_PORT}={text!r} is not a valid port",
                           "an integer 1-65535")
    credentials = _security(_obj(data.get("security")), file, problems, env)
    payload = _get(data, "maxPayloadSize", int, _get(data, "maxPayloadSizeBytes", int, _TB.max_payload_bytes))
    min_delay = float(_get(data, "minReconnectDelay", (int, float), _TB.min_reconnect_delay))
    max_delay = float(_get(data, "maxReconnectDelay", (int, float), _TB.max_reconnect_delay))
    if min_delay > max_delay:
        problems.error("/thingsboard/minReconnectDelay",
                       f"minReconnectDelay {min_delay} is above maxReconnectDelay {max_delay}",
                       "minReconnectDelay <= maxReconnectDelay")
    return ThingsBoardConfig(
        host=host, port=port, qos=1,
        protocol=_get(data, "protocol", str, _TB.protocol),
        keepalive=_get(data, "keepalive", int, _TB.keepalive),
        max_payload_bytes=payload,
        rate_limits=_rate_limits(data, problems),
        min_reconnect_delay=min_delay, max_reconnect_delay=max_delay,
        send_linger_ms=float(_get(data, "sendLingerMs", (int, float), _TB.send_linger_ms)),
        device_activity=_device_activity(_obj(data.get("checkingDeviceActivity"))),
        remote_configuration=_get(data, "remoteConfiguration", bool, _TB.remote_configuration),
        report_strategy=_obj(data.get("reportStrategy")) or None,
        **credentials,
    )


def _device_activity(data: dict) -> DeviceActivityConfig:
    """``checkingDeviceActivity`` as the reference spells it (the schema has checked the types)."""
    default = _TB.device_activity
    return DeviceActivityConfig(
        enabled=_get(data, "checkDeviceInactivity", bool, default.enabled),
        timeout=float(_get(data, "inactivityTimeoutSeconds", (int, float), default.timeout)),
        check_period=float(_get(data, "inactivityCheckPeriodSeconds", (int, float), default.check_period)))


def _security(data: dict, file: str, problems: Problems, env: Mapping[str, str]) -> dict[str, Any]:
    where = "/thingsboard/security"
    kind = data.get("type")
    if not isinstance(kind, str):  # older configs give no type: infer it from the keys
        if "privateKey" in data or "cert" in data:
            kind = "tlsPrivateKey"
        elif "username" in data or "clientId" in data or "password" in data:
            kind = "usernamePassword"
        else:
            kind = "tlsAccessToken" if "caCert" in data else "accessToken"
    token = _get(data, "accessToken", str, "")
    username, password = _get(data, "username", str, ""), _get(data, "password", str, "")
    client_id = _get(data, "clientId", str, "")
    if env.get(ENV_TOKEN):  # like the reference gateway: the environment's token wins
        token, username, password = env[ENV_TOKEN], "", ""
        kind = "tlsAccessToken" if kind.startswith("tls") or "caCert" in data else "accessToken"
    if kind in ("accessToken", "tlsAccessToken"):
        if not token:
            problems.error(where, f"security type {kind} without an accessToken",
                           f"\"accessToken\": the gateway device's token (or set {ENV_TOKEN})")
        elif token == PLACEHOLDER_TOKEN:
            problems.warn(join(where, "accessToken"), "accessToken is still the shipped placeholder",
                          f"the gateway device's access token from ThingsBoard (or set {ENV_TOKEN})")
    elif kind == "usernamePassword":
        if not (username or client_id):
            problems.error(where, "usernamePassword security without a username or clientId",
                           "\"username\" and \"password\", or \"clientId\", as set on the gateway device")
        elif password and not username:
            problems.error(join(where, "password"), "a password without a username", "\"username\" as well")
    tls = None
    if kind.startswith("tls") or "caCert" in data:
        paths = {}
        for key in ("caCert", "cert", "privateKey"):
            value = _get(data, key, str, "")
            required = kind == "tlsPrivateKey" and key != "caCert"
            if not value:
                if required:
                    problems.error(where, f"security type {kind} without \"{key}\"",
                                   f"\"{key}\": the path of a PEM file")
                paths[key] = ""
                continue
            paths[key] = resolve_path(value, file)
            reason = check_readable_file(paths[key])
            if reason:
                problems.error(join(where, key), f"{key} file {paths[key]} {reason}", "a readable PEM file")
        tls = TlsConfig(ca_cert=paths["caCert"], cert=paths["cert"], private_key=paths["privateKey"],
                        insecure=data.get("insecure") is True)
    return {"access_token": token if kind in ("accessToken", "tlsAccessToken") else "",
            "username": username, "password": password, "client_id": client_id, "tls": tls}


def _rate_limits(data: dict, problems: Problems) -> RateLimits:
    limits = data.get("rateLimits")
    if isinstance(limits, dict):
        messages = float(_get(limits, "messages", (int, float), 0.0))
        points = float(_get(limits, "datapoints", (int, float), 0.0))
    else:
        messages = _limit_string(limits, "/thingsboard/rateLimits", problems)
        points = 0.0
    if isinstance(data.get("dpRateLimits"), str):
        points = _limit_string(data["dpRateLimits"], "/thingsboard/dpRateLimits", problems)
    return RateLimits(messages_per_second=messages, datapoints_per_second=points)


def _limit_string(text: Any, pointer: str, problems: Problems) -> float:
    """The tightest per-second rate of a ThingsBoard limit string ``cap:seconds,cap:seconds``; 0 = none."""
    if not isinstance(text, str) or not text.strip() or text.strip().upper().startswith("DEFAULT_"):
        return 0.0  # DEFAULT_*: ThingsBoard's own limits (getSessionLimits) apply
    rates = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if not match or float(match.group(2)) <= 0:
            problems.error(pointer, f"{text!r} is not a rate limit string",
                           "\"capacity:seconds\" pairs such as \"10:1,300:60\"")
            return 0.0
        rates.append(float(match.group(1)) / float(match.group(2)))
    return min(rates)


def _storage(data: dict, file: str, problems: Problems) -> StorageConfig:
    kind = _get(data, "type", str, _STORAGE.type).strip().lower()
    if kind not in STORAGE_TYPES:
        extra = " (file storage is not supported: sqlite is the durable choice)" if kind == "file" else ""
        problems.error("/storage/type", f"unknown storage type {data.get('type')!r}{extra}",
                       " or ".join(STORAGE_TYPES))
    return StorageConfig(
        type=kind,
        data_file_path=resolve_path(_get(data, "data_file_path", str, _STORAGE.data_file_path), file),
        max_records=_get(data, "max_records_count", int, _STORAGE.max_records),
        max_size_mb=_get(data, "max_size_mb", int, _get(data, "size_limit", int, _STORAGE.max_size_mb)),
        read_batch=_get(data, "read_records_count", int,
                        _get(data, "max_read_records_count", int, _STORAGE.read_batch)),
        rate_limit=read_rate_limit(data.get("rateLimit"), "/storage/rateLimit", problems, ("endpoint",)),
        durability=_durability(data, kind, problems),
    )


def _durability(data: dict, kind: str, problems: Problems) -> str:
    """``storage.durability``: what a 200 survives. Memory storage survives nothing, so any level is an error."""
    value = data.get("durability")
    if value is None:
        return _STORAGE.durability
    level = value if isinstance(value, str) else ""
    if level not in DURABILITY_LEVELS:
        return _STORAGE.durability  # the schema has reported it
    if kind == "memory":
        problems.error("/storage/durability", f"durability {level!r} cannot be given by memory storage: its "
                       "events are lost when the process ends, however it ends",
                       "no durability key with type memory, or type sqlite for a 200 that survives "
                       "a crash (process) or a power cut (power)")
    return level


def connector_entries(data: Any, file: str, problems: Problems) -> list[tuple[str, ConnectorEntry]]:
    """(JSON pointer, entry) for each complete connector entry of general-config ``data``."""
    entries: list[tuple[str, ConnectorEntry]] = []
    names: dict[str, str] = {}
    value = data.get("connectors") if isinstance(data, dict) else None
    for index, item in enumerate(_list(value)):
        pointer = join("/connectors", index)
        if not isinstance(item, dict):
            continue
        name, kind = _get(item, "name", str, ""), _get(item, "type", str, "")
        configuration = _get(item, "configuration", str, "")
        if not (name and kind and configuration):
            continue  # the schema has reported it
        if name in names:
            problems.error(join(pointer, "name"), f"connector name {name!r} is already used by {names[name]}",
                           "a unique name per connector")
        names.setdefault(name, pointer)
        entries.append((pointer, ConnectorEntry(name=name, type=kind.strip().lower(),
                                                configuration=resolve_path(configuration, file))))
    return entries
