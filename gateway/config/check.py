"""The ``rest-gateway check`` report: every config file read, its format, endpoints, warnings or problems."""
from __future__ import annotations

from collections.abc import Mapping

from connectors.registry import connector_type
from gateway.config.errors import ConfigProblem
from gateway.config.loader import ConfigReport, read_all
from gateway.config.model import GatewayConfig
from gateway.cpus import describe as describe_cpus


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
        kind = connector_type(entry.type)
        if entry.configuration == file and kind is not None:
            return [f"  connector {entry.name!r} ({entry.type})", *kind.summary(config)]
    return []


def _general_summary(cfg: GatewayConfig) -> list[str]:
    tb = cfg.thingsboard
    auth = "access token" if tb.access_token else ("username/password" if tb.username else "client id")
    tls = ", TLS" if tb.tls else ""
    storage = cfg.storage
    where = f" at {storage.data_file_path}, durability {storage.durability}" if storage.type == "sqlite" else ""
    limit = storage.rate_limit
    limited = (f", at most {limit.requests:g} requests per {limit.per_seconds:g} s (burst {limit.capacity})"
               if limit is not None else "")
    lines = [f"  ThingsBoard {tb.host}:{tb.port} ({tb.protocol}, {auth}{tls}, QoS {tb.qos})",
             f"  storage {storage.type}{where}, at most {storage.max_records} records{limited}",
             f"  log level {cfg.log_level}, log format {cfg.logging.format}", _cpus_summary(cfg),
             _admin_summary(cfg), _statistics_summary(cfg), _reload_summary(cfg)]
    activity = tb.device_activity
    if activity.enabled:
        lines.append(f"  devices silent for {activity.timeout:g} s are disconnected from ThingsBoard "
                     f"(checked every {activity.check_period:g} s)")
    if tb.remote_configuration:
        lines.append("  remote configuration ON: ThingsBoard may change the connector files and the log level "
                     "(docs/remote-configuration.md)")
    lines += [f"  extension folder {p}" for p in cfg.extension_paths]
    return lines


def _cpus_summary(cfg: GatewayConfig) -> str:
    if cfg.cpus == "auto":
        return "  runs on one CPU, the least busy at start (cpus: auto)"
    if cfg.cpus == "all":
        return "  runs where the kernel places its threads (cpus: all)"
    return f"  runs on CPUs {describe_cpus(cfg.cpus)} (cpus)"


def _admin_summary(cfg: GatewayConfig) -> str:
    admin = cfg.admin
    if not admin.enabled:
        return "  admin listener off"
    auth = "basic auth" if admin.username else "no auth"
    return (f"  admin listener http://{admin.host}:{admin.port} (status page /, /metrics, /healthz, /readyz; {auth}; "
            f"ready without ThingsBoard up to {admin.max_ready_backlog} events)")


def _statistics_summary(cfg: GatewayConfig) -> str:
    stats = cfg.statistics
    if not stats.enabled:
        return "  statistics to ThingsBoard off"
    return f"  statistics to ThingsBoard every {stats.period_seconds} s (v1/devices/me/telemetry)"


def _reload_summary(cfg: GatewayConfig) -> str:
    watch = f" and on file changes (checked every {cfg.reload.interval_s:g} s)" if cfg.reload.watch else ""
    return f"  pid file {cfg.pid_file}; reloads on SIGHUP / rest-gateway reload{watch}"


def format_problems(problems: list[ConfigProblem]) -> str:
    """Problems one per line, as printed by ``check`` and at startup."""
    return "\n".join(str(p) for p in problems)
