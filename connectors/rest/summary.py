"""What ``rest-gateway check`` prints about a valid rest.json: endpoints, device API, downlink URLs."""
from __future__ import annotations

from connectors.rest.model import THREADS_WHEN_STORE_IS_IMMEDIATE, THREADS_WHEN_STORE_WAITS, RestConfig, ServerConfig


def rest_summary(cfg: RestConfig) -> list[str]:
    """Indented lines: where it listens, each endpoint with its security and converter, downlink counts."""
    server = cfg.server
    scheme = "https" if server.ssl else "http"
    lines = [f"  listens on {scheme}://{server.host}:{server.port} (body <= {server.max_body_bytes} bytes, "
             f"{_threads(server)}, {server.connection_limit} connections)"]
    if server.trusted_proxies:
        lines.append(f"  client address from X-Forwarded-For of: {', '.join(server.trusted_proxies)}")
    for mapping in cfg.mappings:
        conv = mapping.converter
        converter = f"custom {conv.extension}" if conv.type == "custom" else conv.type
        methods = ", ".join(mapping.methods)
        limit = mapping.rate_limit
        limited = (f", rate limit {limit.requests:g}/{limit.per_seconds:g} s burst {limit.capacity} by {limit.by}"
                   if limit is not None else "")
        keys = mapping.idempotency
        once = (f", Idempotency-Key kept {keys.window_seconds} s (<= {keys.max_keys} keys)"
                if keys is not None else "")
        lines.append(f"  {methods:<12} {mapping.endpoint}  security {mapping.security.type}, "
                     f"converter {converter}{limited}{once}")
    for entry in cfg.attribute_requests:
        methods = ", ".join(entry.get("HTTPMethods") or ["POST"])
        lines.append(f"  {methods:<12} {entry.get('endpoint')}  attribute request")
    api = cfg.device_api
    if api is not None and api.enabled:
        provisioning = ", provisioning on" if api.provisioning is not None else ""
        lines.append(f"  device API   {api.base_path}/<token>/...  {len(api.devices)} device token(s){provisioning}")
        if api.coap is not None and api.coap.enabled:
            rate = api.coap.rate_limit
            lines.append(f"  CoAP         coap://{api.coap.host}:{api.coap.port}/api/v1/<token>/... (udp; "
                         f"<= {api.coap.max_observations} observations, checked every "
                         f"{api.coap.observe_check_seconds} s; {rate.requests} requests per "
                         f"{rate.per_seconds:g} s per address)")
    lines += _relative_urls(cfg)
    lines.append(f"  attribute updates: {len(cfg.attribute_updates)}, "
                 f"server-side RPC: {len(cfg.server_side_rpc)}, "
                 f"attribute requests: {len(cfg.attribute_requests)}")
    return lines


def _relative_urls(cfg: RestConfig) -> list[str]:
    from connectors.rest.downlink.model import relative_url_bases

    server = cfg.server
    host = "127.0.0.1" if server.host in ("", "0.0.0.0", "::") else server.host
    own = f"{'https' if server.ssl else 'http'}://{host}:{server.port}"
    prefix = "/requestsMapping" if cfg.format == "current" else ""
    entries = [(f"{prefix}/{section}/{i}", e) for section, items in
               (("attributeUpdates", cfg.attribute_updates), ("serverSideRpc", cfg.server_side_rpc))
               for i, e in enumerate(items)]
    return [f"  {pointer}: relative URL {url} is sent to {base}/{url.lstrip('/')}"
            for pointer, url, base in relative_url_bases(entries, server.base_url, own)]


def _threads(server: ServerConfig) -> str:
    if server.threads is not None:
        return f"{server.threads} threads"
    return f"{THREADS_WHEN_STORE_WAITS} threads with SQLite storage, {THREADS_WHEN_STORE_IS_IMMEDIATE} with memory"
