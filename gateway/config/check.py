"""The ``rest-gateway check`` report: every config file read, its format, endpoints, warnings or problems."""
from __future__ import annotations

from collections.abc import Mapping

from connectors.rest.model import RestConfig
from gateway.config.errors import ConfigProblem
from gateway.config.loader import ConfigReport, read_all
from gateway.config.model import GatewayConfig


def check_report(path: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(exit code: 0 valid, 1 invalid, text to print) for the general config at ``path``; never raises."""
    try:
        report = read_all(path, env)
    except Exception as exc:  # a bug in a reader must not end in a traceback for the user
        return 1, f"{path}: cannot be checked: internal error {type(exc).__name__}: {exc} (please report)\n"
    lines: list[str] = []
    for problems in report.files:
        if problems.errors:
            lines.append(f"{problems.file}: INVALID, {len(problems.errors)} problem(s)")
            lines += [f"  {p}" for p in sorted(problems.errors, key=lambda p: p.line or 0)]
        elif problems.file in report.formats:
            lines.append(f"{problems.file}: OK, {report.formats[problems.file]}")
            lines += _summary(report, problems.file)
        else:  # read without errors but its config was not built (errors elsewhere in the general file)
            lines.append(f"{problems.file}: no problems of its own")
    warnings = report.warnings
    if warnings:
        lines.append(f"{len(warnings)} warning(s):")
        lines += [f"  {w}" for w in warnings]
    errors = report.errors
    if errors or report.gateway is None:
        lines.append(f"Configuration is INVALID: {len(errors)} problem(s); rest-gateway would not start.")
        return 1, "\n".join(lines) + "\n"
    lines.append("Configuration is valid.")
    return 0, "\n".join(lines) + "\n"


def _summary(report: ConfigReport, file: str) -> list[str]:
    if report.gateway is not None and report.gateway.file == file:
        return _general_summary(report.gateway)
    for entry, config in report.connectors:
        if entry.configuration == file and isinstance(config, RestConfig):
            return [f"  connector {entry.name!r} ({entry.type})", *_rest_summary(config)]
    return []


def _general_summary(cfg: GatewayConfig) -> list[str]:
    tb = cfg.thingsboard
    auth = "access token" if tb.access_token else ("username/password" if tb.username else "client id")
    tls = ", TLS" if tb.tls else ""
    storage = cfg.storage
    where = f" at {storage.data_file_path}" if storage.type == "sqlite" else ""
    limit = storage.rate_limit
    limited = (f", at most {limit.requests:g} requests per {limit.per_seconds:g} s (burst {limit.capacity})"
               if limit is not None else "")
    lines = [f"  ThingsBoard {tb.host}:{tb.port} ({tb.protocol}, {auth}{tls}, QoS {tb.qos})",
             f"  storage {storage.type}{where}, at most {storage.max_records} records{limited}",
             f"  log level {cfg.log_level}, log format {cfg.logging.format}",
             _admin_summary(cfg)]
    lines += [f"  extension folder {p}" for p in cfg.extension_paths]
    return lines


def _admin_summary(cfg: GatewayConfig) -> str:
    admin = cfg.admin
    if not admin.enabled:
        return "  admin listener off"
    auth = "basic auth" if admin.username else "no auth"
    return (f"  admin listener http://{admin.host}:{admin.port} (/metrics, /healthz, /readyz; {auth}; "
            f"ready without ThingsBoard up to {admin.max_ready_backlog} events)")


def _rest_summary(cfg: RestConfig) -> list[str]:
    server = cfg.server
    scheme = "https" if server.ssl else "http"
    lines = [f"  listens on {scheme}://{server.host}:{server.port} (body <= {server.max_body_bytes} bytes, "
             f"{server.threads} threads, {server.connection_limit} connections)"]
    for mapping in cfg.mappings:
        conv = mapping.converter
        converter = f"custom {conv.extension}" if conv.type == "custom" else conv.type
        methods = ", ".join(mapping.methods)
        limit = mapping.rate_limit
        limited = (f", rate limit {limit.requests:g}/{limit.per_seconds:g} s burst {limit.capacity} by {limit.by}"
                   if limit is not None else "")
        lines.append(f"  {methods:<12} {mapping.endpoint}  security {mapping.security.type}, "
                     f"converter {converter}{limited}")
    for entry in cfg.attribute_requests:
        methods = ", ".join(entry.get("HTTPMethods") or ["POST"])
        lines.append(f"  {methods:<12} {entry.get('endpoint')}  attribute request")
    api = cfg.device_api
    if api is not None and api.enabled:
        provisioning = ", provisioning on" if api.provisioning is not None else ""
        lines.append(f"  device API   {api.base_path}/<token>/...  {len(api.devices)} device token(s){provisioning}")
        if api.coap is not None and api.coap.enabled:
            limit = api.coap.rate_limit
            lines.append(f"  CoAP         coap://{api.coap.host}:{api.coap.port}/api/v1/<token>/... (udp; "
                         f"<= {api.coap.max_observations} observations, checked every "
                         f"{api.coap.observe_check_seconds} s; {limit.requests} requests per "
                         f"{limit.per_seconds:g} s per address)")
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


def format_problems(problems: list[ConfigProblem]) -> str:
    """Problems one per line, as printed by ``check`` and at startup."""
    return "\n".join(str(p) for p in problems)
