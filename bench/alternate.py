"""A/B in alternating short slices: two gateways run side by side, pinned, and wrk loads one at a time.

`bench/run.py --gateway-rev` starts each system fresh and loads it for 8-10 s; on a shared VM the
machine's own speed drifts by 10-30 % between such runs, more than most levers are worth. Here both
gateways (A: the code at ``--a-rev``; B: ``--b-rev`` or the working tree) are started once, pinned to
CPU 0, with one private mosquitto on CPU 1, and wrk (CPU 1) loads A and B in turn for a few seconds
each, ABBA..., so each pair sees nearly the same machine. Each side may also get its own
``sendLingerMs``. It prints each pair and the median of the paired B/A ratios; an A/A run (``--b-rev``
equal to ``--a-rev``) shows the noise floor. With ``--a-system ceiling`` A is the Flask + waitress
ceiling app instead, and B/A is the gateway's share of the ceiling, paired slice by slice.

    python bench/alternate.py --a-rev HEAD --pairs 8 --seconds 4 --connections 8
    python bench/alternate.py --a-system ceiling --storage memory --connections 64 --pairs 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.load import run_wrk, wrk_binary  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402
from bench.systems import (  # noqa: E402
    CEILING_THREADS,
    LOAD_CPUS,
    ROOT,
    SERVER_CPUS,
    CeilingServer,
    GatewayServer,
    Mosquitto,
    Server,
    cpu_seconds,
    snapshot,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-system", choices=("gateway", "ceiling"), default="gateway",
                        help="A: a gateway at --a-rev, or the ceiling app (32 threads unless --threads-a)")
    parser.add_argument("--b-system", choices=("gateway", "ceiling"), default="gateway",
                        help="B: a gateway at --b-rev, or the ceiling app (32 threads unless --threads-b)")
    parser.add_argument("--a-rev", default="HEAD", help="A: the gateway as committed at this revision")
    parser.add_argument("--b-rev", default=None, help="B: the gateway at this revision (default: working tree)")
    parser.add_argument("--linger-a", type=float, default=None, help="A's sendLingerMs (default: its own)")
    parser.add_argument("--linger-b", type=float, default=None, help="B's sendLingerMs (default: its own)")
    parser.add_argument("--threads-a", type=int, default=None, help="A's REST threads (default: its own)")
    parser.add_argument("--threads-b", type=int, default=None, help="B's REST threads (default: its own)")
    parser.add_argument("--storage", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--durability", choices=("power", "process"), default="power")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="main")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one slice")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_binary() is None:
        print("wrk is not installed (Debian: apt install wrk)", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    systems = {"A": args.a_system, "B": args.b_system}
    revs = {"A": args.a_rev, "B": args.b_rev}
    roots = {side: snapshot(revs[side], tempfile.mkdtemp(prefix=f"alternate-{side.lower()}-"))
             if systems[side] == "gateway" and revs[side] else ROOT for side in "AB"}
    lingers = {"A": args.linger_a, "B": args.linger_b}
    threads = {"A": args.threads_a, "B": args.threads_b}
    broker = Mosquitto(tempfile.mkdtemp(prefix="alternate-broker-"), LOAD_CPUS).start()
    dirs = {side: tempfile.mkdtemp(prefix=f"alternate-{side.lower()}-") for side in "AB"}
    servers: dict[str, Server] = {}
    runs: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}  # (req/s, CPU µs per request)
    try:
        for side in "AB":
            if systems[side] == "ceiling":
                servers[side] = CeilingServer(dirs[side], SERVER_CPUS, threads[side] or CEILING_THREADS).start()
                continue
            servers[side] = GatewayServer(dirs[side], SERVER_CPUS, args.storage, broker, scenario.mapping(),
                                          threads[side], "WARNING", roots[side], rest_extra=scenario.rest_extra(),
                                          durability=args.durability, linger_ms=lingers[side]).start()
        for side in "AB":  # warm-up
            run_wrk(servers[side].port, scenario, args.connections, 2, dirs[side], LOAD_CPUS)
        for pair in range(args.pairs):
            for side in ("AB" if pair % 2 == 0 else "BA"):
                cpu = cpu_seconds(servers[side].pid)
                load = run_wrk(servers[side].port, scenario, args.connections, args.seconds, dirs[side], LOAD_CPUS)
                cpu = cpu_seconds(servers[side].pid) - cpu
                runs[side].append((load.rps, cpu / max(1, load.acknowledged) * 1e6))
                time.sleep(0.3)
            (a_rps, a_us), (b_rps, b_us) = runs["A"][-1], runs["B"][-1]
            print(f"pair {pair + 1}: A {a_rps:7,.0f} req/s {a_us:6.1f} µs/req | B {b_rps:7,.0f} req/s "
                  f"{b_us:6.1f} µs/req | B/A {b_rps / a_rps:.3f}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        broker.stop()
    ratios = [b[0] / a[0] for a, b in zip(runs["A"], runs["B"], strict=True)]
    cpu_ratios = [b[1] / a[1] for a, b in zip(runs["A"], runs["B"], strict=True)]
    print(f"A median {statistics.median(r for r, _ in runs['A']):,.0f} req/s, "
          f"B median {statistics.median(r for r, _ in runs['B']):,.0f} req/s; paired B/A median "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}); CPU per request B/A "
          f"{statistics.median(cpu_ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
