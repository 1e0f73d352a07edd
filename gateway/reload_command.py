"""``rest-gateway reload``: check the config files, then send SIGHUP to the gateway named by the pid file.

The files are checked here first, as ``rest-gateway check`` does, so an operator sees every
problem at once at the prompt; an invalid configuration is not sent (the running gateway would
refuse it too, and keeps running unchanged either way). The gateway logs the outcome of the
reload itself (applied, or which changes need a restart) and counts it in /metrics.
"""
from __future__ import annotations

import os
import signal
import sys

from gateway.config.check import check_report
from gateway.config.loader import read_all
from gateway.pidfile import is_running_gateway, read_pid

NOT_RUNNING = 3  # exit code when no gateway runs (1: the configuration is invalid)


def reload_command(config: str, pid_file: str | None = None) -> int:
    """Check ``config``, then signal the running gateway; returns the exit code."""
    code, text = check_report(config)
    if code != 0:
        print(text, file=sys.stderr, end="")
        print("rest-gateway reload: not reloading; the running gateway keeps its configuration.", file=sys.stderr)
        return code
    if pid_file is None:
        gateway = read_all(config).gateway
        assert gateway is not None  # the check passed
        pid_file = gateway.pid_file
    pid = read_pid(pid_file)
    if pid is None:
        print(f"rest-gateway reload: no rest-gateway is running: its pid file {pid_file} does not exist or "
              "holds no pid (is it started with this config? pidFile in gateway.yaml sets the path)", file=sys.stderr)
        return NOT_RUNNING
    if not is_running_gateway(pid):
        print(f"rest-gateway reload: no rest-gateway is running: the pid file {pid_file} names pid {pid}, which "
              "is not a running rest-gateway (a stale file from a gateway that did not stop cleanly)",
              file=sys.stderr)
        return NOT_RUNNING
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        print(f"rest-gateway reload: not allowed to signal pid {pid}; run this as the gateway's user",
              file=sys.stderr)
        return 1
    except ProcessLookupError:
        print(f"rest-gateway reload: pid {pid} ended just now; no rest-gateway is running", file=sys.stderr)
        return NOT_RUNNING
    print(f"configuration is valid; sent SIGHUP to rest-gateway (pid {pid}). The gateway's log and "
          "rest_gateway_config_reloads_total on /metrics tell the outcome.")
    return 0
