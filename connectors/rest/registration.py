"""Registers the ``rest`` connector type (connectors/registry.py imports this module on first lookup)."""
from __future__ import annotations

from collections.abc import Iterator

from connectors.base import Connector
from connectors.registry import ConnectorContext, ConnectorType, register
from connectors.rest.config import FORMAT_NAMES, read_rest_config
from connectors.rest.model import RestConfig
from connectors.rest.summary import rest_summary


def _create(context: ConnectorContext) -> Connector:
    from connectors.rest.connector import RestConnector  # Flask and waitress only when serving

    return RestConnector(context.name, context.config, context.uplink, context.extension_paths,
                         context.logger, state_dir=context.state_dir, metrics=context.metrics,
                         report_strategy=context.report_strategy, store_waits=context.store_waits)


def _describe(config: RestConfig) -> str:
    return FORMAT_NAMES.get(config.format, "REST connector config")


def _secrets(config: RestConfig) -> Iterator[str]:
    """Mapping secrets (basic password, bearer tokens, hmac secret), downlink passwords, device API secrets."""
    for mapping in config.mappings:
        yield from mapping.security.secrets()
    for entry in (*config.attribute_updates, *config.server_side_rpc):
        security = entry.get("security") or {}
        if isinstance(security, dict) and isinstance(security.get("password"), str):
            yield security["password"]
    if config.device_api is not None:
        yield from config.device_api.secrets()


REST = ConnectorType(name="rest", read_config=read_rest_config, create=_create, describe=_describe,
                     summary=rest_summary, secrets=_secrets)
register(REST)
