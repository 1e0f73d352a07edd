"""The daemon binds itself to the CPUs ``cpus`` asks for: read back from /proc for every thread."""
from __future__ import annotations

import os
from typing import Any

import pytest

REST = {"host": "127.0.0.1", "port": "0", "mapping": [{
    "endpoint": "/sensors", "HTTPMethods": ["POST"], "security": {"type": "anonymous"},
    "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "sensor",
                  "attributes": [], "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}}]}


def cpus_of_threads(pid: int) -> set[str]:
    """The Cpus_allowed_list of each thread of ``pid``."""
    allowed = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as fh:
            allowed |= {line.split(":", 1)[1].strip() for line in fh if line.startswith("Cpus_allowed_list:")}
    return allowed


def test_a_listed_cpu_holds_every_thread(make_daemon: Any) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this machine gives the tests one CPU: a listed CPU changes nothing")
    last = max(os.sched_getaffinity(0))
    daemon = make_daemon(REST, general={"cpus": [last]})
    assert cpus_of_threads(daemon.proc.pid) == {str(last)}
    assert f"running on CPUs {last} of" in daemon.log_text()


def test_auto_puts_every_thread_on_one_cpu(make_daemon: Any) -> None:
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        pytest.skip("this machine gives the tests one CPU: auto has nothing to choose")
    daemon = make_daemon(REST)  # the key is not set: auto
    [cpu] = cpus_of_threads(daemon.proc.pid)
    assert cpu.isdigit() and int(cpu) in available
    assert f"running on CPU {cpu} of" in daemon.log_text() and "cpus: auto" in daemon.log_text()


def test_all_leaves_the_threads_to_the_kernel(make_daemon: Any) -> None:
    daemon = make_daemon(REST, general={"cpus": "all"})
    with open("/proc/self/status", encoding="ascii") as fh:
        ours = {line.split(":", 1)[1].strip() for line in fh if line.startswith("Cpus_allowed_list:")}
    assert cpus_of_threads(daemon.proc.pid) == ours


def test_a_cpu_this_machine_lacks_stops_the_start_with_the_fix(make_daemon: Any) -> None:
    daemon = make_daemon(REST, start=False, general={"cpus": [4096]})
    with pytest.raises(AssertionError, match="daemon exited with 1"):
        daemon.start()
    log = daemon.log_text()
    assert f"cannot start: {daemon.config_path}: cpus: CPU 4096 is not available to this process" in log
    assert "or use auto" in log
