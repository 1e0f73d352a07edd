"""Which changes of a rest.json a running REST connector cannot take without a restart.

The listeners stay as they are over a reload (same sockets, same thread pools), so everything
that sizes or binds them needs a restart; endpoints, converters, security and downlink rules
do not (connectors/rest/connector.py swaps them). The device API keeps its state (mailboxes,
observations, provisioned devices) over a reload, so its section must stay the same.
"""
from __future__ import annotations

from connectors.rest.model import RestConfig, ServerConfig

#: ServerConfig field → the rest.json key named in the log
_SERVER_KEYS = {"host": "host", "port": "port", "ssl": "SSL", "cert": "security.cert", "key": "security.key",
                "threads": "threads", "connection_limit": "connectionLimit", "channel_timeout": "channelTimeout",
                "max_body_bytes": "maxBodySize", "max_waiting_responses": "maxWaitingResponses"}


def restart_only_changes(old: RestConfig, new: RestConfig, waits_ready: bool) -> list[str]:
    """Each change from ``old`` to ``new`` that needs a restart, as a readable phrase.

    ``waits_ready``: the running connector has room for requests waiting for ThingsBoard's answer
    (it started with a ``responseExpected`` endpoint).
    """
    where = "server." if new.format == "current" else ""
    changes = [f"{new.file}: HTTP listener {where}{key} ({_show(old.server, field)} -> {_show(new.server, field)})"
               for field, key in _SERVER_KEYS.items()
               if getattr(old.server, field) != getattr(new.server, field)]
    if old.device_api != new.device_api:
        old_coap = old.device_api.coap if old.device_api is not None else None
        new_coap = new.device_api.coap if new.device_api is not None else None
        what = "deviceApi (including its CoAP listener)" if old_coap != new_coap else "deviceApi"
        changes.append(f"{new.file}: {what} changed; the device API keeps its devices' state while running")
    if not waits_ready and any(m.response.expected for m in new.mappings):
        changes.append(f"{new.file}: a mapping with response.responseExpected where the running config has none "
                       "(the HTTP server reserves threads for waiting requests at start)")
    return changes


def _show(server: ServerConfig, field: str) -> str:
    value = getattr(server, field)
    if value is None:  # threads not written: the storage's default
        return "default"
    return repr(value) if isinstance(value, str) else str(value)
