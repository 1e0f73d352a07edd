"""Reads and checks the ``deviceApi`` section of rest.json (the schema checks types; this the meaning)."""
from __future__ import annotations

import os
import re
from typing import Any

from connectors.rest.device_api.model import (
    DEFAULT_ATTRIBUTE_REQUEST_TIMEOUT_MS,
    DEFAULT_BASE_PATH,
    DEFAULT_CLIENT_RPC_TIMEOUT_MS,
    DEFAULT_MAX_CONCURRENT_POLLS,
    DEFAULT_MAX_PENDING_KEYS,
    DEFAULT_MAX_POLL_TIMEOUT_MS,
    DEFAULT_MAX_QUEUED_RPC,
    DEFAULT_RPC_TTL_MS,
    CoapConfig,
    CoapRateLimit,
    DeviceApiConfig,
    DeviceCredentials,
    ProvisioningConfig,
)
from gateway.config.document import Problems, resolve_path
from gateway.config.locate import join

_BASE_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
#: (rest.json key, DeviceApiConfig field, default) of the integer settings
LIMITS = (
    ("maxPollTimeout", "max_poll_timeout_ms", DEFAULT_MAX_POLL_TIMEOUT_MS),
    ("maxConcurrentPolls", "max_concurrent_polls", DEFAULT_MAX_CONCURRENT_POLLS),
    ("rpcTimeout", "rpc_ttl_ms", DEFAULT_RPC_TTL_MS),
    ("clientRpcTimeout", "client_rpc_timeout_ms", DEFAULT_CLIENT_RPC_TIMEOUT_MS),
    ("attributeRequestTimeout", "attribute_request_timeout_ms", DEFAULT_ATTRIBUTE_REQUEST_TIMEOUT_MS),
    ("maxPendingUpdateKeys", "max_pending_keys", DEFAULT_MAX_PENDING_KEYS),
    ("maxQueuedRpc", "max_queued_rpc", DEFAULT_MAX_QUEUED_RPC),
)


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    return value if isinstance(value, str) else default


def _positive_int(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


def _number(data: dict[str, Any], key: str, default: float) -> float:
    """A positive number (the schema check reports anything else, and its range)."""
    value = data.get(key, default)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def _count(data: dict[str, Any], key: str, default: int) -> int:
    """An integer >= 0 (the schema check reports anything else, and its range)."""
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def read_device_api(data: Any, file: str, pointer: str, problems: Problems) -> DeviceApiConfig | None:
    """The ``deviceApi`` section (``None`` when absent); problems are added, never raised."""
    if data is None:
        return None
    if not isinstance(data, dict):
        return None  # the schema check reports it
    devices = []
    listed = data.get("devices")
    for entry in listed if isinstance(listed, list) else []:  # another type: the schema check reports it
        if isinstance(entry, dict):
            devices.append(DeviceCredentials(_str(entry, "accessToken"), _str(entry, "deviceName").strip(),
                                             _str(entry, "deviceType").strip() or "default"))
    provisioning = None
    prov = data.get("provisioning")
    if isinstance(prov, dict):
        provisioning = ProvisioningConfig(_str(prov, "provisionDeviceKey"), _str(prov, "provisionDeviceSecret"),
                                          _str(prov, "deviceType").strip() or "default")
    firmware = data.get("firmware")
    firmware_path = ""
    if isinstance(firmware, dict) and _str(firmware, "path"):
        firmware_path = resolve_path(_str(firmware, "path"), file)
    limits = {field: _positive_int(data, key, default) for key, field, default in LIMITS}
    config = DeviceApiConfig(enabled=data.get("enabled", True) is True,
                             base_path=_str(data, "basePath", DEFAULT_BASE_PATH).rstrip("/") or "/",
                             devices=tuple(devices), provisioning=provisioning, firmware_path=firmware_path,
                             coap=read_coap(data.get("coap")), pointer=pointer, **limits)
    check_device_api(config, data, problems)
    return config


def read_coap(data: Any) -> CoapConfig | None:
    """``deviceApi.coap`` (None when absent or not an object: the schema check reports the latter)."""
    if not isinstance(data, dict):
        return None
    limit = data.get("rateLimit")
    rate = CoapRateLimit()
    if isinstance(limit, dict):
        requests = _positive_int(limit, "requests", rate.requests)
        per = limit.get("perSeconds", 1)
        per_seconds = float(per) if isinstance(per, int | float) and not isinstance(per, bool) and per > 0 else 1.0
        rate = CoapRateLimit(requests, per_seconds, _positive_int(limit, "burst", requests),
                             _positive_int(limit, "maxAddresses", rate.max_addresses))
    defaults = CoapConfig()
    port = data.get("port", defaults.port)
    return CoapConfig(
        enabled=data.get("enabled", True) is True,
        host=_str(data, "host", defaults.host).strip() or defaults.host,
        port=port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else defaults.port,
        observe_check_seconds=_positive_int(data, "observeCheckSeconds", defaults.observe_check_seconds),
        max_observations=_positive_int(data, "maxObservations", defaults.max_observations),
        max_payload_bytes=_positive_int(data, "maxPayloadBytes", defaults.max_payload_bytes),
        max_concurrent_requests=_positive_int(data, "maxConcurrentRequests", defaults.max_concurrent_requests),
        ack_timeout_seconds=_number(data, "ackTimeoutSeconds", defaults.ack_timeout_seconds),
        max_retransmit=_count(data, "maxRetransmit", defaults.max_retransmit),
        rate_limit=rate)


def check_device_api(config: DeviceApiConfig, data: dict[str, Any], problems: Problems) -> None:
    """Semantic problems: path, duplicate tokens and names, provisioning credentials, firmware folder."""
    ptr = config.pointer
    if not _BASE_PATH.fullmatch(config.base_path):
        problems.error(join(ptr, "basePath"), f"basePath {config.base_path!r} is not a URL path",
                       "a path such as \"/api/v1\" (letters, digits, . _ ~ -)")
    elif config.base_path in ("/health", "/metrics"):
        problems.error(join(ptr, "basePath"), f"basePath {config.base_path!r} is reserved by the gateway",
                       "another path, e.g. \"/api/v1\"")
    tokens: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, device in enumerate(config.devices):
        where = join(ptr, "devices", index)
        if not device.access_token:
            problems.error(join(where, "accessToken"), "empty access token", "a non-empty string")
        elif "/" in device.access_token or device.access_token != device.access_token.strip():
            problems.error(join(where, "accessToken"), "the access token contains '/' or blanks at its ends",
                           "a token that can be one URL path segment")
        elif device.access_token in tokens:
            problems.error(join(where, "accessToken"),
                           f"the same access token is already used by devices/{tokens[device.access_token]}",
                           "one token per device")
        else:
            tokens[device.access_token] = index
        if not device.device_name:
            problems.error(join(where, "deviceName"), "empty device name", "the ThingsBoard device name")
        elif device.device_name in names:
            problems.error(join(where, "deviceName"),
                           f"device {device.device_name!r} is already listed at devices/{names[device.device_name]}",
                           "each device once")
        else:
            names[device.device_name] = index
    if config.provisioning is not None:
        for key, value in (("provisionDeviceKey", config.provisioning.key),
                           ("provisionDeviceSecret", config.provisioning.secret)):
            if not value:
                problems.error(join(ptr, "provisioning", key), f"empty {key}", "a non-empty string")
    if config.firmware_path and not os.path.isdir(config.firmware_path):
        problems.error(join(ptr, "firmware", "path"), f"firmware folder {config.firmware_path} does not exist",
                       "a folder of TITLE/VERSION/FILE packages (relative paths are relative to rest.json)")
