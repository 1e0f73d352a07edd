"""The processes a benchmark run drives: its own mosquitto, the ceiling app and the gateway daemon."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
GATEWAY_TOKEN = "bench-gateway-token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: pinned runs: the server under test on CPU 0; load, broker and delivery counting on CPU 1
SERVER_CPUS: set[int] = {0}
LOAD_CPUS: set[int] = {1}
#: waitress threads of the ceiling app: the gateway's default with SQLite (with 8 it measured no faster)
CEILING_THREADS = 32


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and every thread it will start) to ``cpus``."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None


class Mosquitto:
    """A private mosquitto on a free loopback port, anonymous, no persistence, deep queues."""

    def __init__(self, workdir: str, cpus: set[int] | None = None) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        binary = mosquitto_binary()
        if binary is None:
            raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
        conf = os.path.join(self.workdir, "mosquitto.conf")
        with open(conf, "w", encoding="ascii") as fh:
            fh.write(f"listener {self.port} 127.0.0.1\npersistence false\nallow_anonymous true\n"
                     f"log_dest file {os.path.join(self.workdir, 'mosquitto.log')}\nlog_type error\n"
                     "log_type warning\nmax_inflight_messages 0\nmax_queued_messages 1000000\nset_tcp_nodelay true\n")
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=pinned(self.cpus))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"mosquitto exited with {self.proc.returncode}") from None
                time.sleep(0.02)
        raise SystemExit(f"mosquitto did not listen on {self.port} in {timeout}s")

    def stop(self) -> None:
        _stop(self.proc)


class Server:
    """One HTTP server process under test; subclasses say how to start it."""

    name = "server"
    delivers = False

    def __init__(self, workdir: str, cpus: set[int] | None, code_root: str = ROOT) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.code_root = code_root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(workdir, f"{self.name}.log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_path(self) -> str:
        return "/"

    def start(self, timeout: float = 30.0) -> Server:
        env = dict(os.environ, PYTHONPATH=self.code_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for name in ("TB_GW_HOST", "TB_GW_PORT", "TB_GW_ACCESS_TOKEN"):
            env.pop(name, None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=pinned(self.cpus))
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path()}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                requests.get(url, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen in {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        _stop(self.proc)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-chars:]
        except FileNotFoundError:
            return ""

    def pending(self) -> int:
        """Messages accepted but not yet delivered (0 for a server that delivers nothing)."""
        return 0


class CeilingServer(Server):
    """bench/ceiling_app.py: Flask on waitress, reads the body, answers 200."""

    name = "ceiling"

    def __init__(self, workdir: str, cpus: set[int] | None, threads: int) -> None:
        super().__init__(workdir, cpus)
        self.threads = threads

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(BENCH, "ceiling_app.py"), "--port", str(self.port),
                "--threads", str(self.threads)]


class RpcTargetServer(Server):
    """bench/rpc_target.py: the RPC scenario's HTTP target, echoing each request's body at once."""

    name = "rpc-target"

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(BENCH, "rpc_target.py"), "--port", str(self.port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


DURABILITY_LEVELS = ("power", "process")


#: the end of a gateway system's name when it runs without the admin listener, i.e. without metrics
NO_METRICS = "-nometrics"


def gateway_system(system: str) -> tuple[str, str]:
    """(storage type, durability) of a system name: gateway-sqlite, gateway-sqlite-process, gateway-memory
    (each maybe ending in :data:`NO_METRICS`)."""
    storage, _, durability = system.removeprefix("gateway-").removesuffix(NO_METRICS).partition("-")
    return storage, durability or "power"


def gateway_metrics(system: str) -> bool:
    """Whether gateway ``system`` runs with its admin listener (metrics, request counting) on."""
    return not system.endswith(NO_METRICS)


def gateway_system_name(storage: str, durability: str = "power", metrics: bool = True) -> str:
    """The system name of a gateway run; the defaults keep the plain name (comparable with old results)."""
    name = f"gateway-{storage}" if durability == "power" else f"gateway-{storage}-{durability}"
    return name if metrics else name + NO_METRICS


class GatewayServer(Server):
    """``python -m gateway run`` on a generated gateway.yaml + rest.json, storage in its own folder."""

    delivers = True

    def __init__(self, workdir: str, cpus: set[int] | None, storage: str, broker: Mosquitto,
                 mapping: dict[str, Any], threads: int | None, log_level: str = "INFO",
                 code_root: str = ROOT, switch_interval: float | None = None,
                 rest_extra: dict[str, Any] | None = None, durability: str = "power",
                 metrics: bool = True, linger_ms: float | None = None) -> None:
        """``metrics`` False: the admin listener is off, so connectors skip request counting too;
        ``linger_ms`` (None: the gateway's default) is written as ``thingsboard.sendLingerMs``."""
        self.name = gateway_system_name(storage, durability, metrics)
        self.switch_interval = switch_interval
        super().__init__(workdir, cpus, code_root)
        rest: dict[str, Any] = {"host": "127.0.0.1", "port": str(self.port), "mapping": [mapping]}
        if threads is not None:
            rest["threads"] = threads
        rest.update(rest_extra or {})  # e.g. the RPC scenario's serverSideRpc section
        storage_cfg: dict[str, Any] = {"type": storage}
        if storage == "sqlite":
            storage_cfg["data_file_path"] = "./data/gateway.db"
            if durability != "power":  # the default is left out, as users write it
                storage_cfg["durability"] = durability
        general = {
            "logLevel": log_level,
            "thingsboard": {"host": "127.0.0.1", "port": broker.port, "qos": 1,
                            "security": {"accessToken": GATEWAY_TOKEN}},
            "storage": storage_cfg,
            "connectors": [{"name": "REST Connector", "type": "rest", "configuration": "rest.json"}],
            # a free admin port: the default 9100 is often held by another daemon on a shared machine,
            # and the gateway then refuses to start; port 0 turns the listener (and metrics) off
            "admin": {"port": free_port() if metrics else 0},
        }
        if linger_ms is not None:
            general["thingsboard"]["sendLingerMs"] = linger_ms
        with open(os.path.join(workdir, "rest.json"), "w", encoding="utf-8") as fh:
            json.dump(rest, fh, indent=2)
        self.config_path = os.path.join(workdir, "gateway.yaml")
        with open(self.config_path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(general, fh)

    def command(self) -> list[str]:
        args = ["run", "-c", self.config_path]
        if self.switch_interval is None:
            return [sys.executable, "-m", "gateway", *args]
        # experiment: the same daemon with another GIL switch interval (a lever measured by the bench)
        code = (f"import runpy, sys; sys.setswitchinterval({self.switch_interval!r}); "
                "sys.argv[0] = 'gateway'; runpy.run_module('gateway', run_name='__main__', alter_sys=True)")
        return [sys.executable, "-c", code, *args]

    def ready_path(self) -> str:
        return "/health"

    def health(self) -> dict[str, Any]:
        return dict(requests.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json())

    def pending(self) -> int:
        return int(self.health().get("storage", {}).get("events", -1))


def start_py_spy(pid: int, seconds: float, out_dir: str, label: str,
                 cpus: set[int] | None) -> subprocess.Popen[bytes] | None:
    """py-spy records ``pid`` (GIL holder only) for ``seconds`` into ``out_dir/label.txt``; None if missing."""
    binary = shutil.which("py-spy")
    if binary is None:
        print("py-spy not installed: pip install py-spy", file=sys.stderr)
        return None
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{label}.txt")
    return subprocess.Popen([binary, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200",
                             "-f", "raw", "-o", out, "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(cpus))


def snapshot(rev: str, into: str) -> str:
    """Extract the committed tree at ``rev`` into ``into`` (so a run measures exactly that revision)."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], capture_output=True,
                             check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True, timeout=60)
    return into


def describe(rev: str = "HEAD") -> str:
    """``rev`` as a short commit id (with subject), or a placeholder outside git."""
    try:
        return subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s", rev], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder that is removed however the run ends."""
    return tempfile.TemporaryDirectory(prefix=prefix)
