"""What remote configuration tells ThingsBoard: the configuration as client attributes of the gateway device.

Attribute names and shapes are the reference gateway's (``tb_gateway_remote_configurator.py``,
3.7-3.8): ``general_configuration``, ``storage_configuration``, ``logs_configuration``,
``active_connectors``, ``Version``, and one attribute per connector name holding
``{name, type, configuration, logLevel, configurationJson, ts}``. Every secret is masked
(``***``); a masked value sent back unchanged keeps the current secret (:func:`unmask`).
Pure functions: no I/O beyond reading the config files they are given.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from gateway.admin.redact import MASK, redact_json
from gateway.config.document import read_document
from gateway.config.loader import LoadedConfig
from gateway.config.model import ConnectorEntry

#: the client attribute that reports each remote change's outcome (not in the reference, which only logs)
STATUS_ATTRIBUTE = "remoteConfigurationStatus"
LOG_LEVEL_ATTRIBUTE = "RemoteLoggingLevel"
#: shared attributes of the reference that only a restart could apply here: refused, with a status
RESTART_ONLY = ("general_configuration", "storage_configuration", "grpc_configuration", "logs_configuration")
ACTIVE_CONNECTORS = "active_connectors"


def now_ms() -> int:
    """Unix time in milliseconds, as ThingsBoard's ``ts``."""
    return int(time.time() * 1000)


def read_raw(path: str) -> Any:
    """A config file's content as written (JSON or YAML), or None when it cannot be read or parsed."""
    return read_document(path).data


def general_attributes(loaded: LoadedConfig, raw: Any, secrets: Iterable[str], log_level: str,
                       remote_level: str, version: str, ts: int) -> dict[str, Any]:
    """The general attributes: ``general_configuration``, ``storage_configuration``, ``logs_configuration``,
    ``active_connectors``, ``RemoteLoggingLevel`` and ``Version``; ``raw`` is gateway.yaml's content as it runs."""
    secrets = list(secrets)
    raw = raw if isinstance(raw, dict) else {}
    thingsboard = raw.get("thingsboard") if isinstance(raw.get("thingsboard"), dict) else {}
    storage = raw.get("storage") if isinstance(raw.get("storage"), dict) else {}
    return {
        "general_configuration": {**redact_json(thingsboard, secrets), "ts": ts},
        "storage_configuration": {**redact_json(storage, secrets), "ts": ts},
        "logs_configuration": {"logLevel": loaded.gateway.log_level, "effectiveLevel": log_level,
                               "format": loaded.gateway.logging.format, "ts": ts},
        ACTIVE_CONNECTORS: [entry.name for entry, _ in loaded.connectors],
        LOG_LEVEL_ATTRIBUTE: remote_level,
        "Version": version,
    }


def connector_attribute(entry: ConnectorEntry, raw: Any, secrets: Iterable[str], log_level: str,
                        ts: int) -> dict[str, Any]:
    """``{<connector name>: {name, type, configuration, logLevel, configurationJson, ts}}``, secrets masked.

    ``raw`` is the connector file's content as it runs.
    """
    return {entry.name: {"name": entry.name, "type": entry.type,
                         "configuration": os.path.basename(entry.configuration), "logLevel": log_level,
                         "configurationJson": redact_json(raw if raw is not None else {}, secrets), "ts": ts}}


def unmask(new: Any, current: Any) -> Any:
    """``new`` with every ``***`` replaced by the value at the same place in ``current`` (when there is one).

    List items are matched by their ``endpoint`` when they have one (mapping entries), else by position
    when both lists are as long; an item that matches nothing keeps its ``***`` (see :func:`masked_keys`).
    """
    if new == MASK:
        return current if current is not None else new
    if isinstance(new, dict):
        old = current if isinstance(current, dict) else {}
        return {key: unmask(value, old.get(key)) for key, value in new.items()}
    if isinstance(new, list):
        old_items = current if isinstance(current, list) else []
        return [unmask(item, _match(item, index, new, old_items)) for index, item in enumerate(new)]
    return new


def _match(item: Any, index: int, new: list[Any], old: list[Any]) -> Any:
    if isinstance(item, dict) and "endpoint" in item:
        return next((o for o in old if isinstance(o, dict) and o.get("endpoint") == item["endpoint"]), None)
    return old[index] if len(old) == len(new) else None


def masked_keys(value: Any, pointer: str = "") -> list[str]:
    """JSON pointers of values still ``***`` (a masked secret with no current value to keep)."""
    if value == MASK:
        return [pointer or "/"]
    found: list[str] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            found += masked_keys(sub, f"{pointer}/{escaped}")
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += masked_keys(sub, f"{pointer}/{index}")
    return found

