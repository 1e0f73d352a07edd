"""Reads rest.json in either format (legacy rest-connector.md or ThingsBoard gateway 3.7+) into RestConfig."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping as StrMapping
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from connectors.rest.config_checks import check_rest_config, check_served
from connectors.rest.device_api.config import read_device_api
from connectors.rest.forwarded import read_trusted_proxies
from connectors.rest.model import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RESPONSE_TIMEOUT_S,
    IdempotencySettings,
    Mapping,
    ResponseConfig,
    RestConfig,
    ServerConfig,
    normalise_methods,
)
from connectors.rest.security_config import read_security
from converters.config import ConverterConfig, ConverterConfigError
from gateway.config.document import Problems, read_document, resolve_path
from gateway.config.env_secrets import resolve_env_secrets
from gateway.config.errors import ConfigError
from gateway.config.locate import join
from gateway.config.schema_check import check_schema, load_schema, schema_path
from gateway.rate_limit import read_rate_limit

LEGACY, CURRENT = "legacy", "current"
FORMAT_NAMES = {LEGACY: "ThingsBoard gateway legacy format (rest-connector.md)",
                CURRENT: "ThingsBoard gateway 3.7+ format"}
DOWNLINK_SECTIONS = ("attributeUpdates", "serverSideRpc", "attributeRequests")
SCHEMA_FILE = schema_path(__file__, "schema.json")
_SERVER = ServerConfig()
_Default = TypeVar("_Default", int, None)  # what _int gives for a missing or non-integer value


def detect_format(data: Any) -> str:
    """``current`` if ``server`` or ``requestsMapping`` is present, else ``legacy``."""
    if isinstance(data, dict) and ("server" in data or "requestsMapping" in data):
        return CURRENT
    return LEGACY


def read_rest_config(path: str, extension_paths: Sequence[str] = (),
                     env: StrMapping[str, str] | None = None) -> tuple[RestConfig | None, Problems]:
    """Read, validate and normalise one rest.json; the config is ``None`` when there are errors.

    Never raises for bad input: every problem (syntax, schema, semantics) is in the returned Problems.
    ``${ENV:NAME}`` in secrets is resolved from ``env`` (default ``os.environ``).
    """
    document = read_document(path, "json")
    problems = document.problems
    if document.data is None:
        return None, problems
    return rest_config_from_data(document.data, document.path, problems, extension_paths, env), problems


def load_rest_config(path: str, extension_paths: Sequence[str] = ()) -> RestConfig:
    """Like :func:`read_rest_config`, but raises :class:`ConfigError` listing every error."""
    config, problems = read_rest_config(path, extension_paths)
    if config is None:
        raise ConfigError(problems.errors)
    return config


def rest_config_from_data(data: Any, file: str, problems: Problems,
                          extension_paths: Sequence[str] = (), env: StrMapping[str, str] | None = None
                          ) -> RestConfig | None:
    """Validate and normalise already-parsed rest.json ``data`` (from ``file``), adding to ``problems``."""
    data = resolve_env_secrets(data, problems, os.environ if env is None else env)
    fmt = detect_format(data)
    full = load_schema(SCHEMA_FILE)
    check_schema(data, {"$ref": f"#/$defs/{fmt}", "$defs": full["$defs"]}, problems)
    if not isinstance(data, dict):
        return None
    server_ptr = "/server" if fmt == CURRENT else ""
    server_data = _obj(data.get("server")) if fmt == CURRENT else data
    server = replace(_server(server_data, file, server_ptr, problems),
                     trusted_proxies=read_trusted_proxies(data.get("trustedProxies"), "/trustedProxies", problems))
    if fmt == LEGACY and isinstance(data.get("requestsMapping"), list):
        problems.error("/requestsMapping", "is a list", "an object with attributeUpdates/serverSideRpc/...")
    mappings = tuple(_mapping(entry, join("/mapping", i), file, problems)
                     for i, entry in enumerate(_list(data.get("mapping"))) if isinstance(entry, dict))
    downlinks = _obj(data.get("requestsMapping")) if fmt == CURRENT else data
    down_ptr = "/requestsMapping" if fmt == CURRENT else ""
    if fmt == CURRENT:
        for section in DOWNLINK_SECTIONS:
            if section in data:
                problems.warn(join("", section),
                              f"'{section}' at the top level is ignored in the 3.7+ format",
                              "it under \"requestsMapping\"")
    sections = {name: tuple(_downlink(e) for e in _list(downlinks.get(name)) if isinstance(e, dict))
                for name in DOWNLINK_SECTIONS}
    device_api = read_device_api(data.get("deviceApi"), file, "/deviceApi", problems)
    check_served(data.get("mapping"), device_api, problems)
    config = RestConfig(file=file, format=fmt, server=server, mappings=mappings,
                        attribute_updates=sections["attributeUpdates"],
                        server_side_rpc=sections["serverSideRpc"],
                        attribute_requests=sections["attributeRequests"], device_api=device_api,
                        report_strategy=_obj(data.get("reportStrategy")) or None)
    check_rest_config(config, server_ptr, down_ptr, problems, extension_paths)
    return None if problems.errors else config


def _obj(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _str(data: dict, key: str, default: str = "") -> str:
    value = data.get(key, default)
    return value if isinstance(value, str) else default


def _int(data: dict, key: str, default: _Default) -> int | _Default:
    value = data.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _server(data: dict, file: str, pointer: str, problems: Problems) -> ServerConfig:
    port = _SERVER.port
    raw_port = data.get("port", port)
    if isinstance(raw_port, str) and re.fullmatch(r"[0-9]+", raw_port.strip()):
        port = int(raw_port.strip())
        if not 1 <= port <= 65535:
            problems.error(join(pointer, "port"), f"{raw_port!r} is not a valid port",
                           "an integer 1-65535 or a string of digits")
    elif isinstance(raw_port, int) and not isinstance(raw_port, bool):
        port = raw_port
    security = _obj(data.get("security"))
    cert, key = _str(security, "cert"), _str(security, "key")
    return ServerConfig(
        host=_str(data, "host", _SERVER.host).strip() or _SERVER.host,
        port=port,
        ssl=data.get("SSL") is True,
        cert=resolve_path(cert, file) if cert else "",
        key=resolve_path(key, file) if key else "",
        max_body_bytes=_int(data, "maxBodySize", DEFAULT_MAX_BODY_BYTES),
        threads=_int(data, "threads", None),  # None: the storage's default (ServerConfig.threads_for)
        max_waiting_responses=_int(data, "maxWaitingResponses", _SERVER.max_waiting_responses),
        connection_limit=_int(data, "connectionLimit", _SERVER.connection_limit),
        channel_timeout=_int(data, "channelTimeout", _SERVER.channel_timeout),
        base_url=_str(data, "baseUrl").rstrip("/"),
    )


def _mapping(entry: dict, pointer: str, file: str, problems: Problems) -> Mapping:
    if "HTTPMethods" in entry and "HTTPMethod" in entry:
        problems.warn(join(pointer, "HTTPMethod"),
                      "both HTTPMethods and HTTPMethod are set; HTTPMethod is ignored",
                      "only one of them")
    security = _obj(entry.get("security"))
    converter = _converter(entry.get("converter"), join(pointer, "converter"), problems)
    return Mapping(
        endpoint=_str(entry, "endpoint"),
        methods=normalise_methods(entry, ("HTTPMethods", "HTTPMethod"), ("POST",)),
        security=read_security(security, file, join(pointer, "security"), problems),
        converter=converter,
        pointer=pointer,
        rate_limit=read_rate_limit(entry.get("rateLimit"), join(pointer, "rateLimit"), problems),
        response=_response(_obj(entry.get("response"))),
        report_strategy=entry.get("reportStrategy") if isinstance(entry.get("reportStrategy"), dict) else None,
        idempotency=_idempotency(entry.get("idempotency")),
    )


def _idempotency(data: Any) -> IdempotencySettings | None:
    """The ``idempotency`` section (types checked by the schema); ``None`` when absent."""
    if not isinstance(data, dict):
        return None
    default = IdempotencySettings()
    return IdempotencySettings(window_seconds=_int(data, "windowSeconds", default.window_seconds),
                               max_keys=_int(data, "maxKeys", default.max_keys))


def _response(data: dict) -> ResponseConfig:
    timeout = data.get("timeout", DEFAULT_RESPONSE_TIMEOUT_S)
    ok_timeout = isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout <= 3600
    return ResponseConfig(
        success=data.get("successResponse"), has_success="successResponse" in data,
        unsuccessful=data.get("unsuccessfulResponse"), has_unsuccessful="unsuccessfulResponse" in data,
        expected=data.get("responseExpected") is True, attribute=_str(data, "responseAttribute"),
        timeout=float(timeout) if ok_timeout else DEFAULT_RESPONSE_TIMEOUT_S,
    )


def _converter(section: Any, pointer: str, problems: Problems) -> ConverterConfig:
    try:
        return ConverterConfig.from_dict(section)
    except ConverterConfigError as exc:
        reported = any(p.pointer.startswith(pointer) for p in problems.errors)
        for where, message in exc.problems if not reported else ():
            problems.error(pointer + where, message)
    return ConverterConfig(type="invalid", device_name_expression="")


def _downlink(entry: dict) -> dict[str, Any]:
    """A downlink entry as written, with its method key(s) normalised and ``extension-config`` renamed."""
    result = dict(entry)
    for key in ("httpMethod",):
        if key in result:
            value = result.pop(key)
            result.setdefault("HTTPMethod", value)
    if isinstance(result.get("HTTPMethod"), str):
        result["HTTPMethod"] = result["HTTPMethod"].strip().upper()
    if "HTTPMethods" in result or (isinstance(result.get("HTTPMethod"), list)):
        result["HTTPMethods"] = list(normalise_methods(result, ("HTTPMethods", "HTTPMethod"), ()))
        if isinstance(result.get("HTTPMethod"), list):
            del result["HTTPMethod"]
    if "extension-config" in result:
        result.setdefault("extensionConfig", result.pop("extension-config"))
    return result
