"""CoAP device API benchmark: CoAP telemetry vs the HTTP device API on the same storage, bare aiocoap as
the ceiling, and the memory per observing device, side by side in one run (issue #12).

    python bench/coap.py                          # 5 s per run, 64 clients, sqlite and memory, pinned
    python bench/coap.py --seconds 10 --clients 8,64 --storage memory --repeat 3

Every system runs as a fresh process, in turn (interleaved per repetition): ``aiocoap`` (bench/coap_ceiling.py,
aiocoap as shipped), ``aiocoap-lean`` (the same with the gateway's Context), then for each storage
``http-STORAGE`` and ``coap-STORAGE``: the real daemon (``python -m gateway run``) with a real mosquitto,
loaded on ``POST /api/v1/{token}/telemetry`` over HTTP keep-alive or CoAP CON. The load generator
(bench/coap_load.py) is a separate process; with ``--pin on`` the server is on CPU 0 and the load, the
broker and the counting subscriber on CPU 1. Figures only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import coap_load  # noqa: E402
from bench.counter import DeliveryCounter  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402
from bench.systems import (  # noqa: E402
    BENCH,
    LOAD_CPUS,
    SERVER_CPUS,
    GatewayServer,
    Mosquitto,
    cpu_seconds,
    describe,
    pinned,
    scratch_dir,
)

PAYLOAD = b'{"temperature":42.5,"humidity":73}'
HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds of load first")
    parser.add_argument("--clients", default="64", help="comma list of concurrent clients (sockets/connections)")
    parser.add_argument("--storage", default="sqlite,memory", help="comma list of sqlite, memory")
    parser.add_argument("--systems", default="aiocoap,aiocoap-lean,http,coap",
                        help="comma list of aiocoap, aiocoap-lean, http, coap")
    parser.add_argument("--devices", type=int, default=100, help="devices (tokens) the clients post as")
    parser.add_argument("--observers", type=int, default=1000, help="observing devices for the memory figure (0: skip)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, interleaved (medians are printed)")
    parser.add_argument("--pin", choices=("on", "off"), default="on",
                        help="on: server on CPU 0, load + broker + subscriber on CPU 1")
    parser.add_argument("--json", metavar="FILE", help="write every run as JSON into FILE")
    return parser.parse_args(argv)


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tokens(count: int, prefix: str = "BENCH") -> list[str]:
    return [f"{prefix}_TOKEN_{i:05d}" for i in range(count)]


def device_api(udp_port: int, devices: int, observers: int) -> dict[str, Any]:
    """The rest.json ``deviceApi`` section: the devices, CoAP on ``udp_port``, no per-address limit to speak of
    (every bench client shares 127.0.0.1, which the limiter would otherwise hold to 1,000 requests/s)."""
    listed = [{"accessToken": t, "deviceName": f"CoAP bench {i:05d}"} for i, t in enumerate(tokens(devices))]
    listed += [{"accessToken": t, "deviceName": f"Observer {i:05d}"} for i, t in enumerate(tokens(observers, "OBS"))]
    return {"devices": listed, "coap": {"host": HOST, "port": udp_port, "maxObservations": max(10_000, observers * 2),
                                        "rateLimit": {"requests": 10_000_000, "burst": 10_000_000}}}


def wait_coap(port: int, timeout: float = 30.0) -> None:
    """Wait until a CoAP ping (an empty CON) on ``port`` is answered (the UDP listener starts after HTTP)."""
    import socket

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        sock.settimeout(0.2)
        mid = 0
        while time.monotonic() < deadline:
            mid += 1
            try:
                sock.send(bytes((0x40, 0)) + mid.to_bytes(2, "big"))
                if sock.recv(64)[2:4] == mid.to_bytes(2, "big"):
                    return
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.05)
    raise RuntimeError(f"nothing answered CoAP on udp {HOST}:{port} in {timeout:.0f} s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def in_process(target: Any, args: tuple[Any, ...], cpus: set[int] | None) -> dict[str, Any]:
    """Run ``target(*args)`` in a forked process on ``cpus``; its LoadFigures as a dict."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()

    def child() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        try:
            out.put(target(*args).as_dict())
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries the run
            out.put({"error": f"{exc.__class__.__name__}: {exc}"})

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        result = dict(out.get(timeout=args[5] + args[6] + 60))
    finally:
        proc.join(10)
    if "error" in result:
        raise RuntimeError(f"the load generator failed: {result['error']}")
    return result


class CeilingCoap:
    """bench/coap_ceiling.py as a process."""

    def __init__(self, workdir: str, cpus: set[int] | None, lean: bool) -> None:
        self.port = free_udp_port()
        self.cpus, self.lean, self.workdir = cpus, lean, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CeilingCoap:
        command = [sys.executable, os.path.join(BENCH, "coap_ceiling.py"), "--port", str(self.port)]
        self.proc = subprocess.Popen(command + (["--lean"] if self.lean else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=pinned(self.cpus))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"listening" not in line:
            raise RuntimeError(f"the aiocoap ceiling did not start: {line!r}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def gateway(workdir: str, cpus: set[int] | None, storage: str, broker: Mosquitto, devices: int,
            observers: int = 0) -> tuple[GatewayServer, int]:
    udp = free_udp_port()
    server = GatewayServer(workdir, cpus, storage, broker, SCENARIOS["main"].mapping(), None,
                           rest_extra={"deviceApi": device_api(udp, devices, observers)})
    return server, udp


def measure(args: argparse.Namespace, system: str, clients: int, broker: Mosquitto, rep: int) -> dict[str, Any]:
    server_cpus, load_cpus = (SERVER_CPUS, LOAD_CPUS) if args.pin == "on" else (None, None)
    kind, _, storage = system.partition("-")
    row: dict[str, Any] = {"system": system, "clients": clients, "rep": rep}
    with scratch_dir(f"bench-{system}-") as workdir:
        if kind == "aiocoap":
            ceiling = CeilingCoap(workdir, server_cpus, lean=storage == "lean").start()
            try:
                wait_coap(ceiling.port)
                cpu0, t0 = cpu_seconds(ceiling.pid), time.perf_counter()
                figures = in_process(coap_load.run_coap, (HOST, ceiling.port, tokens(args.devices), PAYLOAD, clients,
                                                          args.warmup, args.seconds), load_cpus)
                row["server_cpu_pct"] = (cpu_seconds(ceiling.pid) - cpu0) / (time.perf_counter() - t0) * 100
                row["rss_mb"] = rss_mb(ceiling.pid)
            finally:
                ceiling.stop()
            return {**row, **figures}
        server, udp = gateway(workdir, server_cpus, storage, broker, args.devices)
        counter = DeliveryCounter(broker.port).start()
        base = counter.snapshot()[0]
        try:
            server.start()
            wait_coap(udp)
            target = coap_load.run_coap if kind == "coap" else coap_load.run_http
            port = udp if kind == "coap" else server.port
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            figures = in_process(target, (HOST, port, tokens(args.devices), PAYLOAD, clients, args.warmup,
                                          args.seconds), load_cpus)
            row["server_cpu_pct"] = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0) * 100
            row["rss_mb"] = rss_mb(server.pid)
            counter.drain(server.pending, base, figures["total_ok"], 120.0)
            delivered = counter.snapshot()[0] - base
            row["delivered_ratio"] = delivered / figures["total_ok"] if figures["total_ok"] else float("nan")
        finally:
            counter.close()
            server.stop()
    return {**row, **figures}


def measure_retried(args: argparse.Namespace, system: str, clients: int, broker: Mosquitto,
                    rep: int) -> dict[str, Any] | None:
    """measure(), once more on a fresh server when a run fails (on a shared machine another process can take
    a port between its choice and its bind); None when the second attempt fails too (the run is reported)."""
    for attempt in (1, 2):
        try:
            return measure(args, system, clients, broker, rep)
        except (RuntimeError, OSError) as exc:
            print(f"  rep {rep} {system} c{clients}: attempt {attempt} failed: {exc}", file=sys.stderr, flush=True)
    return None


def observer_memory(args: argparse.Namespace, broker: Mosquitto, storage: str) -> dict[str, Any]:
    """RSS of the daemon before and after ``args.observers`` devices observe their attributes."""
    server_cpus, load_cpus = (SERVER_CPUS, LOAD_CPUS) if args.pin == "on" else (None, None)
    with scratch_dir("bench-observe-") as workdir:
        server, udp = gateway(workdir, server_cpus, storage, broker, 1, args.observers)
        server.start()
        try:
            wait_coap(udp)
            # one observer first, so aiocoap's and the observe code's one-off allocations are in the baseline
            warm = in_observers(udp, tokens(args.observers, "OBS")[:1], load_cpus)
            time.sleep(1.0)
            before = rss_mb(server.pid)
            held = in_observers(udp, tokens(args.observers, "OBS")[1:], load_cpus)
            time.sleep(1.0)
            after = rss_mb(server.pid)
            stats = server.health()
            for hold, proc in (held["hold"], held["proc"]), (warm["hold"], warm["proc"]):
                hold.set()
                proc.join(10)
        finally:
            server.stop()
    observing = held["report"].get("observing", 0)
    return {"observers": observing, "rss_before_mb": before, "rss_after_mb": after,
            "kb_per_observer": (after - before) * 1024 / observing if observing else float("nan"),
            "report": held["report"], "health_coap": {k: v for k, v in _flatten(stats).items() if "observ" in k}}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def in_observers(udp: int, names: list[str], cpus: set[int] | None) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    hold, ready = ctx.Event(), ctx.Queue()

    def child() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        coap_load.hold_observers(HOST, udp, names, hold, ready)

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    report = ready.get(timeout=120)
    return {"hold": hold, "proc": proc, "report": report}


def median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
    return statistics.median(values) if values else float("nan")


def _ratio(groups: dict[tuple[str, int], list[dict[str, Any]]], group: list[dict[str, Any]], other: str,
           clients: int) -> str:
    """Median over repetitions of this system's rate ÷ ``other``'s in the same repetition."""
    base = groups.get((other, clients))
    if not base:
        return "—"
    per_rep = {r["rep"]: r["rate"] for r in base}
    values = [r["rate"] / per_rep[r["rep"]] for r in group if per_rep.get(r["rep"])]
    return f"{statistics.median(values):.2f}" if values else "—"


def print_table(rows: list[dict[str, Any]], observe: dict[str, Any] | None) -> None:
    print("\n| system | clients | msgs/s (median) | p50 ms | p99 ms | ÷ aiocoap | ÷ http same storage | errors "
          "| retransmits | delivered/acked | server CPU % | load CPU % | RSS MB | reps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        row["rate"] = row["ok"] / row["seconds"] if row["seconds"] else 0.0
        row["load_cpu_pct"] = row["cpu_seconds"] / row["seconds"] * 100 if row["seconds"] else 0.0
        groups.setdefault((row["system"], row["clients"]), []).append(row)
    for (system, clients), group in groups.items():
        rate = median(group, "rate")

        kind, _, storage = system.partition("-")
        http_ratio = _ratio(groups, group, f"http-{storage}", clients) if kind == "coap" else "—"
        ceiling_ratio = _ratio(groups, group, "aiocoap", clients) if system != "aiocoap" else "—"
        errors = sum(sum(r["codes"].values()) for r in group)
        delivered = min((r["delivered_ratio"] for r in group if "delivered_ratio" in r), default=None)
        print(f"| {system} | {clients} | {rate:,.0f} | {median(group, 'p50_ms'):.2f} | {median(group, 'p99_ms'):.2f} "
              f"| {ceiling_ratio} | {http_ratio} | {errors} "
              f"| {sum(r['retransmits'] for r in group)} | {'—' if delivered is None else f'{delivered:.4f}'} "
              f"| {median(group, 'server_cpu_pct'):.0f} | {median(group, 'load_cpu_pct'):.0f} "
              f"| {median(group, 'rss_mb'):.1f} | {len(group)} |")
    if observe is not None:
        print(f"\nObserving devices: {observe['observers']} observations of /attributes held; daemon RSS "
              f"{observe['rss_before_mb']:.1f} → {observe['rss_after_mb']:.1f} MB: "
              f"**{observe['kb_per_observer']:.1f} KB per observing device** ({observe['report']})")


def machine() -> str:
    from importlib.metadata import version

    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, nproc {os.cpu_count()}, {platform.platform()}, "
            f"Python {platform.python_version()}, aiocoap {version('aiocoap')}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pin == "on":
        os.sched_setaffinity(0, LOAD_CPUS)  # this process runs the counting subscriber
    print(f"Machine: {machine()}\nCommand: python bench/coap.py {' '.join(sys.argv[1:] if argv is None else argv)}\n"
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; gateway code: {describe()}", flush=True)
    wanted = args.systems.split(",")
    systems = [s for s in ("aiocoap", "aiocoap-lean") if s in wanted]
    for storage in args.storage.split(","):
        systems += [f"{kind}-{storage}" for kind in ("http", "coap") if kind in wanted]
    rows: list[dict[str, Any]] = []
    observe = None
    with scratch_dir("bench-coap-broker-") as brokerdir:
        broker = Mosquitto(brokerdir, LOAD_CPUS if args.pin == "on" else None).start()
        try:
            for rep in range(1, args.repeat + 1):
                for clients in (int(c) for c in args.clients.split(",")):
                    for system in systems:
                        row = measure_retried(args, system, clients, broker, rep)
                        if row is None:
                            continue
                        rows.append(row)
                        print(f"  rep {rep} {system} c{clients}: {row['ok'] / row['seconds']:,.0f} msgs/s "
                              f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms errors {row['codes']} "
                              f"retransmits {row['retransmits']} delivered/acked {row.get('delivered_ratio', '—')}",
                              flush=True)
            if args.observers > 0:
                observe = observer_memory(args, broker, args.storage.split(",")[0])
        finally:
            broker.stop()
    print_table(rows, observe)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"runs": rows, "observe": observe}, fh, indent=1, default=str)
    lost = [r for r in rows if r.get("delivered_ratio", 1.0) < 1.0]
    if lost:
        print(f"LOST DATA in {len(lost)} run(s): delivered < acknowledged", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
