"""The ``rest-gateway`` command line: ``run`` the daemon, ``check`` its configuration, ``reload`` it."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gateway import __version__

DEFAULT_CONFIG = "config/gateway.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rest-gateway", description=(
        "Serve HTTP endpoints for legacy devices and forward their data to ThingsBoard over MQTT."))
    parser.add_argument("--version", action="version", version=f"rest-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the gateway in the foreground until SIGINT/SIGTERM (SIGHUP reloads)"),
                       ("check", "validate the general config and every connector config it names"),
                       ("reload", "check the config files, then tell the running gateway to apply them")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                         help=f"general config file, YAML or JSON (default: {DEFAULT_CONFIG})")
        if name == "run":
            sub.add_argument("--log-level", help="override the config's logLevel (DEBUG, INFO, ...)")
        if name == "reload":
            sub.add_argument("--pid-file", help="the running gateway's pid file (default: pidFile of the config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from gateway.config.check import check_report

        code, text = check_report(args.config)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    if args.command == "reload":
        from gateway.reload_command import reload_command

        return reload_command(args.config, args.pid_file)
    return _run(args.config, args.log_level)


#: GIL switch interval of the daemon (CPython's default is 5 ms). Request threads that block (the
#: SQLite group commit's followers, the fsync) must re-take the GIL when they wake; with busy threads
#: on another core each re-take can wait a whole interval. Measured (docs/performance.md): 2 ms
#: doubles SQLite storage's throughput at 64 connections on an unpinned 2-core box (1,636 -> 3,385
#: req/s) and is within noise pinned to one core; 1 ms and below cost 7-15 % pinned.
SWITCH_INTERVAL_S = 0.002
_CPYTHON_DEFAULT_SWITCH_INTERVAL_S = 0.005


def tune_switch_interval() -> float:
    """Set the daemon's GIL switch interval unless something already chose one; returns the interval."""
    if sys.getswitchinterval() == _CPYTHON_DEFAULT_SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    return sys.getswitchinterval()


def _run(path: str, log_level: str | None) -> int:
    from gateway.config.errors import ConfigError
    from gateway.config.loader import load_config

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"rest-gateway: not starting, the configuration has {len(exc.problems)} problem(s):",
              file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    from gateway.daemon import Daemon, catch_early_reloads, config_secrets, config_token_paths, run_until_signalled
    from gateway.logs import setup_logging

    setup_logging(log_level or loaded.gateway.log_level, config_secrets(loaded), loaded.gateway.logging.format,
                  config_token_paths(loaded))
    log = logging.getLogger("gateway")
    for warning in loaded.warnings:
        log.warning("config: %s", warning)
    tune_switch_interval()
    from gateway.cpus import CpuSettingError, apply_cpus

    try:
        log.info("%s", apply_cpus(loaded.gateway.cpus, loaded.gateway.file))
    except CpuSettingError as exc:
        log.error("cannot start: %s", exc)
        return 1
    from gateway.pidfile import PidFileError, PidFileUnwritable, remove_pid_file, write_pid_file

    pid_file = loaded.gateway.pid_file
    early_reloads = catch_early_reloads()
    try:
        write_pid_file(pid_file)  # first: a second gateway on the same files stops here
    except PidFileUnwritable as exc:  # e.g. memory storage with the config in a read-only folder
        log.warning("%s; rest-gateway reload cannot find this gateway (SIGHUP works)", exc)
    except PidFileError as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        try:
            daemon = Daemon(loaded, log_level_fixed=log_level is not None)
        except Exception as exc:
            log.error("cannot start: %s", exc)
            return 1
        try:
            run_until_signalled(daemon, early_reloads)
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
    finally:
        remove_pid_file(pid_file)  # before a restart too: the new run writes it again (same pid)
    if daemon.restart_requested:
        restart_process(log)
    return 0


def restart_process(log: logging.Logger) -> None:
    """Replace this process by a fresh run of the same command line (same PID, so systemd, Docker
    and a supervising parent see one process that stayed up); never returns unless exec fails."""
    from gateway.cpus import restore_start_affinity

    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("restarting: %s", " ".join(argv))
    restore_start_affinity()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:  # the service manager restarts on a failure exit (Restart=on-failure)
        log.error("cannot restart in place (%s); exiting with 75 so the service manager restarts it", exc)
        logging.shutdown()
        os._exit(75)
