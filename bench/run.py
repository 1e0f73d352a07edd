"""One command for the end-to-end benchmark: ceiling vs gateway (sqlite, memory) on loopback, interleaved."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.counter import DeliveryCounter  # noqa: E402
from bench.limits import Limits, describe_limits, http_cpu_s, measure_limits, model_for  # noqa: E402
from bench.load import run_load, wrk_binary  # noqa: E402
from bench.report import (  # noqa: E402
    RunResult,
    machine_description,
    pair_ratio_table,
    pin_ratio_table,
    results_section,
    table,
    write_results,
)
from bench.rpc import RpcRun, measure_rpc  # noqa: E402
from bench.scenarios import SCENARIOS, Scenario  # noqa: E402
from bench.synthetic import measure_synthetic, synthetic_table  # noqa: E402
from bench.systems import (  # noqa: E402
    CEILING_THREADS,
    DURABILITY_LEVELS,
    LOAD_CPUS,
    ROOT,
    SERVER_CPUS,
    CeilingServer,
    GatewayServer,
    Mosquitto,
    RpcTargetServer,
    Server,
    cpu_seconds,
    describe,
    gateway_metrics,
    gateway_system,
    gateway_system_name,
    peak_rss_mb,
    scratch_dir,
    snapshot,
    start_py_spy,
)
from connectors.rest.model import ServerConfig  # noqa: E402

SYSTEMS = ("ceiling", "gateway-sqlite", "gateway-memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians are taken over them)")
    parser.add_argument("--connections", default="8,64", help="comma list of concurrent connections")
    parser.add_argument("--rpc-devices", default="100",
                        help="rpc scenario: comma list of concurrent devices, each with one RPC outstanding")
    parser.add_argument("--rpc-rate", default="0",
                        help="rpc scenario: comma list of RPCs/s in all, open loop (0: closed loop, as fast as "
                             "answered); rows with a rate are named rpc@RATE/s and have no ceiling")
    parser.add_argument("--scenarios", default="main", help=f"comma list of {', '.join(SCENARIOS)} or all")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of " + ", ".join(SYSTEMS))
    parser.add_argument("--durability", default="power",
                        help="comma list of storage.durability levels (power, process) for gateway-sqlite: each "
                             "level is its own system, interleaved; power keeps the name gateway-sqlite, process "
                             "runs as gateway-sqlite-process")
    parser.add_argument("--metrics", choices=("on", "off", "both"), default="on",
                        help="the gateway's admin listener (/metrics, request counting): on (the default, as "
                             "shipped), off (admin port 0; systems named gateway-*-nometrics) or both, each "
                             "gateway system once with and once without, interleaved, to measure the cost "
                             "of metrics side by side")
    parser.add_argument("--pin", choices=("on", "off", "both"), default="off",
                        help="on: server on CPU 0, load + broker + subscriber on CPU 1")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (auto: wrk when installed)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--ceiling-threads", type=int, default=CEILING_THREADS,
                        help="waitress threads of the ceiling app (default 32: the gateway's default with SQLite; "
                             "8 measured no faster at 64 connections)")
    parser.add_argument("--gateway-threads", type=int, default=None, help="REST connector threads (default: its own)")
    parser.add_argument("--gateway-rev", metavar="REV",
                        help="measure the gateway as committed at REV (git archive), not the working tree")
    parser.add_argument("--linger-ms", type=float, default=None,
                        help="experiment: the gateway's thingsboard.sendLingerMs (default: the gateway's own)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="experiment: run the gateway with sys.setswitchinterval(S) (CPython default 0.005)")
    parser.add_argument("--log-level", default="INFO", help="gateway logLevel")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--profile", metavar="DIR", help="py-spy record each gateway run into DIR")
    parser.add_argument("--results", metavar="FILE", help="write the table into FILE (e.g. bench/RESULTS.md)")
    parser.add_argument("--label", default="run", help="name of the generated section in --results FILE")
    parser.add_argument("--json", metavar="FILE", help="write every run as JSON into FILE")
    parser.add_argument("--note", action="append", default=[], help="a line for the results notes")
    parser.add_argument("--limits", choices=("on", "off"), default="on",
                        help="measure fsync latency and storage CPU per put before the run and print the model "
                             "throughput beside each gateway row (bench/limits.py)")
    parser.add_argument("--limit-fsyncs", type=int, default=300, help="fsyncs and SQLite commits timed for the limits")
    parser.add_argument("--limit-puts", type=int, default=3000,
                        help="puts per storage and in-flight count for the storage CPU per put")
    parser.add_argument("--synthetic-seconds", type=float, default=3.0,
                        help="with --limits on, after the runs: seconds of the synthetic limit per pinned scenario, "
                             "connection count and storage (bench/synthetic.py); 0 skips it")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds: main scenario, 8 connections, ceiling + gateway-sqlite, once")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.repeat = min(args.duration, 2.0), 1.0, 1
        args.connections, args.scenarios, args.systems = "8", "main", "ceiling,gateway-sqlite"
        args.limit_fsyncs, args.limit_puts = min(args.limit_fsyncs, 50), min(args.limit_puts, 200)
        args.synthetic_seconds = min(args.synthetic_seconds, 0.5)
    return args


def measure(args: argparse.Namespace, system: str, scenario: Scenario, connections: int, pin: bool,
            rep: int, broker: Mosquitto, tool: str, rpc_rate: float = 0.0) -> RunResult:
    """Start ``system`` fresh, warm up, load it, wait for delivery, stop it."""
    server_cpus, load_cpus = (SERVER_CPUS, LOAD_CPUS) if pin else (None, None)
    if scenario.rpc and system != "ceiling":
        run = RpcRun(args.warmup, args.duration, args.gateway_threads, args.log_level, args.code_root,
                     args.switch_interval, args.profile, rpc_rate)
        result = measure_rpc(run, system, scenario, connections, pin, rep, broker, server_cpus, load_cpus)
        _print_run(result, 0.0)
        return result
    with scratch_dir(f"bench-{system}-") as workdir:
        server: Server
        if system == "ceiling" and scenario.rpc:
            server = RpcTargetServer(workdir, server_cpus)  # its ceiling: the target called directly
        elif system == "ceiling":
            server = CeilingServer(workdir, server_cpus, args.ceiling_threads)
        else:
            storage, durability = gateway_system(system)
            server = GatewayServer(workdir, server_cpus, storage, broker, scenario.mapping(),
                                   args.gateway_threads, args.log_level, args.code_root,
                                   args.switch_interval, rest_extra=scenario.rest_extra(), durability=durability,
                                   metrics=gateway_metrics(system), linger_ms=args.linger_ms)
        counter = DeliveryCounter(broker.port).start() if server.delivers else None
        try:
            server.start()
            if args.warmup > 0:
                warm = run_load(tool, server.port, scenario, connections, args.warmup, workdir, load_cpus,
                                args.wrk_threads)
                if counter is not None:
                    counter.drain(server.pending, 0, warm.acknowledged * scenario.messages_per_request,
                           args.drain_timeout)
            base = counter.snapshot()[0] if counter else 0
            spy = None
            if args.profile and server.delivers:
                label = f"{scenario.name}-c{connections}-{'pin' if pin else 'nopin'}-{system}-r{rep}"
                spy = start_py_spy(server.pid, args.duration, args.profile, label, load_cpus)
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            load = run_load(tool, server.port, scenario, connections, args.duration, workdir, load_cpus,
                            args.wrk_threads)
            cpu_pct = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0) * 100
            if spy is not None:
                spy.wait(60)
            delivered, drain_s = None, 0.0
            if counter is not None:
                expected = load.acknowledged * scenario.messages_per_request
                drain_s = counter.drain(server.pending, base, expected, args.drain_timeout)
                delivered = counter.snapshot()[0] - base
            rss = peak_rss_mb(server.pid)
        finally:
            if counter is not None:
                counter.close()
            server.stop()
    result = RunResult(scenario.name, connections, pin, rep, system, load, scenario.messages_per_request,
                       delivered, drain_s, cpu_pct, rss)
    _print_run(result, drain_s)
    return result


def _print_run(r: RunResult, drain_s: float) -> None:
    load, ratio, rpc = r.load, r.delivery_ratio, r.load.tool == "mqtt-rpc"
    print(f"  {r.scenario:8} c={r.connections:<3} pin={'y' if r.pin else 'n'} rep={r.rep} {r.system:22} "
          f"{load.rps:9,.0f} {'RPCs' if rpc else 'req'}/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  "
          f"{'error replies' if rpc else 'non-2xx'} {load.non_2xx}  {'no reply' if rpc else 'err'} "
          f"{load.socket_errors}  cpu {r.cpu_pct:4.0f}%  rss {r.rss_mb:5.1f} MB"
          + ("" if ratio is None else f"  delivered/acked {ratio:.4f} (drain {drain_s:.1f} s)"), flush=True)


def _plan(scenarios: list[Scenario], connections: list[int], rpc_devices: list[int], rpc_rates: list[float],
          repeat: int, systems: list[str]) -> list[tuple[Scenario, int, float, int, str]]:
    """Every run in order: systems interleaved within each repetition; an RPC rate has no ceiling run.

    A scenario with ``side_by_side`` (devapi) runs within the repetitions of that scenario (main) when
    both are asked for: main's systems, then its own, per repetition.
    """
    names = {s.name for s in scenarios}
    plan = []
    for scenario in scenarios:
        if scenario.side_by_side in names:
            continue  # planned with its partner
        group = [scenario, *(s for s in scenarios if s.side_by_side == scenario.name)]
        for conns in rpc_devices if scenario.rpc else connections:
            for rate in rpc_rates if scenario.rpc else [0.0]:
                for rep in range(1, repeat + 1):
                    plan += [(each, conns, rate, rep, system) for each in group for system in systems
                             if not (rate and system == "ceiling")]
    return plan


def add_models(results: list[RunResult], limits: Limits | None, max_threads: int) -> None:
    """Set each gateway run's model throughput from the limits and the same repetition's ceiling.

    Only for one message per request (the limits time single-record puts) and not for RPC round trips.
    """
    ceilings = {(r.scenario, r.connections, r.pin, r.rep): http_cpu_s(r.load.rps, r.cpu_pct)
                for r in results if r.system == "ceiling"}
    for r in results:
        if r.messages_per_request != 1 or r.load.tool == "mqtt-rpc":
            continue
        r.model_rps = model_for(limits, r.system, r.connections, max_threads,
                                ceilings.get((r.scenario, r.connections, r.pin, r.rep)))


def expand_metrics(systems: list[str], metrics: str) -> list[str]:
    """The systems to run for ``--metrics``: every gateway system with metrics (on), without (off), or both."""
    variants = {"on": (True,), "off": (False,), "both": (True, False)}[metrics]
    expanded: list[str] = []
    for system in systems:
        if system == "ceiling":
            expanded.append(system)
            continue
        storage, durability = gateway_system(system)
        expanded += [gateway_system_name(storage, durability, on) for on in variants]
    return expanded


def expand_durability(systems: list[str], levels: list[str]) -> list[str]:
    """The systems to run: gateway-sqlite once per durability level, in the order given."""
    for system in systems:
        if system not in SYSTEMS:
            raise SystemExit(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")
    for level in levels:
        if level not in DURABILITY_LEVELS:
            raise SystemExit(f"unknown durability {level!r}; known: {', '.join(DURABILITY_LEVELS)}")
    expanded: list[str] = []
    for system in systems:
        if system == "gateway-sqlite":
            expanded += [gateway_system_name("sqlite", level) for level in levels]
        else:
            expanded.append(system)
    return expanded


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario_names = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    for name in scenario_names:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    scenarios = [SCENARIOS[n] for n in scenario_names]
    systems = expand_metrics(expand_durability(args.systems.split(","), args.durability.split(",")), args.metrics)
    pins = {"on": [True], "off": [False], "both": [False, True]}[args.pin]
    if any(pins) and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    tool = args.load if args.load != "auto" else ("wrk" if wrk_binary() else "python")
    connections = [int(c) for c in args.connections.split(",")]
    rpc_devices = [int(c) for c in args.rpc_devices.split(",")]
    rpc_rates = [float(r) for r in args.rpc_rate.split(",")]
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *(argv or sys.argv[1:])])
    machine = machine_description()
    print("\n".join(machine), flush=True)
    everything = os.sched_getaffinity(0)
    results: list[RunResult] = []
    failures: list[str] = []
    code = scratch_dir("bench-code-")
    args.code_root = ROOT
    revision = "working tree at " + describe("HEAD")
    if args.gateway_rev:
        args.code_root = snapshot(args.gateway_rev, code.name)
        revision = describe(args.gateway_rev)
    print(f"gateway code: {revision}", flush=True)
    # a commit carries at most one put per thread
    max_threads = args.gateway_threads or ServerConfig().threads_for(store_waits=True)
    limits: Limits | None = None
    limit_lines: list[str] = []
    modelled = any(s.messages_per_request == 1 and not s.rpc for s in scenarios)
    if args.limits == "on" and modelled and any(s != "ceiling" for s in systems):
        limits = measure_limits(connections, max_threads, args.limit_fsyncs, args.limit_puts,
                                cpus=SERVER_CPUS if any(pins) else None)
        limit_lines = describe_limits(limits, connections, max_threads)
        print("\n".join(limit_lines), flush=True)
    try:
        for pin in pins:
            # the subscriber's threads are created per run and inherit this process's affinity
            os.sched_setaffinity(0, LOAD_CPUS if pin else everything)
            with scratch_dir("bench-broker-") as broker_dir:
                broker = Mosquitto(broker_dir, LOAD_CPUS if pin else None).start()
                try:
                    for scenario, conns, rate, rep, system in _plan(scenarios, connections, rpc_devices, rpc_rates,
                                                                    args.repeat, systems):
                        try:
                            results.append(measure(args, system, scenario, conns, pin, rep, broker, tool, rate))
                        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                            failures.append(f"{scenario.name} c={conns} rep={rep} {system}: {exc}")
                            print(f"RUN FAILED: {failures[-1][:2000]}", file=sys.stderr, flush=True)
                finally:
                    broker.stop()
    finally:
        os.sched_setaffinity(0, everything)
        code.cleanup()
    notes = [f"Load generator: {tool}; {args.duration:g} s measured after {args.warmup:g} s warm-up per run; "
             f"{args.repeat} repetition(s), systems interleaved per repetition ({', '.join(systems)}); each run "
             "starts a fresh server process (fresh SQLite file). Gateway endpoint security: anonymous. "
             "delivered/acked counts telemetry entries at a real subscriber against 2xx answers × messages per "
             "request; it can exceed 1.0 by at most the requests in flight when the load stopped.",
             "rpc rows: conns = concurrent devices, each with one RPC outstanding (closed loop); req/s = RPCs/s "
             "answered in the window; p50/p99 = publish -> reply received; non-2xx = error replies; socket err = "
             "RPCs with no reply. Its ceiling = the same HTTP target called directly by the load generator "
             "with as many connections." if any(s.rpc for s in scenarios) else "",
             f"Gateway code: {revision}.",
             *[f"Note: {n}" for n in args.note], *[f"FAILED RUN: {f[:300]}" for f in failures]]
    notes = [n for n in notes if n]
    add_models(results, limits, max_threads)
    if limits is not None and args.synthetic_seconds > 0:
        threads_of = {"sqlite-power": max_threads, "sqlite-process": max_threads,
                      "memory": args.gateway_threads or ServerConfig().threads_for(store_waits=False)}
        synthetic_lines = synthetic_table(results, measure_synthetic(results, threads_of, args.synthetic_seconds,
                                                                     SERVER_CPUS))
        limit_lines += ["", *synthetic_lines] if synthetic_lines else []
    print("\n".join(table(results)))
    pin_lines = pin_ratio_table(results)
    if pin_lines:
        print("\n" + "\n".join(pin_lines))
    pair_lines = pair_ratio_table(results, "devapi", "main")
    if pair_lines:
        print("\n" + "\n".join(pair_lines))
    if limit_lines:
        print("\n" + "\n".join(limit_lines))
    if args.results:
        write_results(args.results, results_section(command, machine, results, notes, args.label, limit_lines),
                      args.label)
        print(f"results written to {args.results}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([r.as_json() for r in results], fh, indent=1)
    lost = [r for r in results if r.delivery_ratio is not None and not r.delivery_ratio >= 1.0]
    failed = [r for r in results if r.load.acknowledged == 0]
    unanswered = [r for r in results if r.load.tool == "mqtt-rpc" and (r.load.socket_errors or r.load.non_2xx)]
    for r in unanswered:
        print(f"RPC FAILURES: {r.system} c={r.connections} rep={r.rep}: {r.load.socket_errors} RPCs got no reply, "
              f"{r.load.non_2xx} error replies", file=sys.stderr)
    for r in lost:
        print(f"LOST DATA: {r.system} {r.scenario} c={r.connections} rep={r.rep}: delivered {r.delivered} of "
              f"{r.expected} acknowledged", file=sys.stderr)
    return 1 if lost or failed or failures or unanswered else 0


if __name__ == "__main__":
    sys.exit(main())
