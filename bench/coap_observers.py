"""Memory per observing CoAP device: the daemon's RSS before and after N devices observe ``/attributes``,
and after each got one update from a broker playing ThingsBoard. Prints the figures (a benchmark:
tests never assert them).

    python bench/coap_observers.py                 # 1,000 observers
    python bench/coap_observers.py --observers 1000,5000 --per-socket 100
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
from aiocoap.numbers.codes import Code

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fixtures.broker import Broker, Subscriber  # noqa: E402 - after the path is set
from tests.fixtures.coap import ObserverSwarm, RawClient, coap_rest, free_udp_port  # noqa: E402
from tests.fixtures.daemon import DaemonProcess  # noqa: E402


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def measure(observers: int, per_socket: int, workdir: Path) -> dict[str, float]:
    """One fresh broker and daemon; the RSS figures for ``observers`` observing devices."""
    broker = Broker(workdir)
    broker.start()
    devices = [{"accessToken": f"OBSERVER_{i:05d}", "deviceName": f"observer-{i:05d}"} for i in range(observers)]
    port = free_udp_port()
    daemon = DaemonProcess(str(workdir), broker, coap_rest(port, devices, maxObservations=observers + 10))
    subscriber = None
    swarm = None
    try:
        daemon.start()
        subscriber = Subscriber(broker).start()
        process = psutil.Process(daemon.proc.pid)
        warm = RawClient(port)  # the first requests allocate what every request needs: not per device
        for i in range(200):
            warm.request(Code.POST,
                         f"api/v1/{devices[i % observers]['accessToken']}/telemetry", b'{"warm": 1}')
        warm.close()
        time.sleep(1.0)
        before = rss_mb(process)
        swarm = ObserverSwarm(port, [d["accessToken"] for d in devices], per_socket)
        started = time.monotonic()
        swarm.register()
        registered_s = time.monotonic() - started
        time.sleep(1.0)
        after = rss_mb(process)
        for index, device in enumerate(devices):
            subscriber.publish("v1/gateway/attributes", {"device": device["deviceName"], "data": {"v": index}})
        if not swarm.wait_for(lambda notes: all(len(n) >= 2 for n in notes.values()), 300):
            raise SystemExit("not every observer got its update")
        time.sleep(1.0)
        updated = rss_mb(process)
        return {"observers": observers, "rss_before_mb": before, "rss_observing_mb": after,
                "rss_after_updates_mb": updated, "per_observer_kb": (after - before) * 1024 / observers,
                "per_observer_after_updates_kb": (updated - before) * 1024 / observers,
                "register_s": registered_s}
    finally:
        if swarm is not None:
            swarm.close()
        if subscriber is not None:
            subscriber.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observers", default="1000", help="comma-separated counts (default 1000)")
    parser.add_argument("--per-socket", type=int, default=50, help="observing devices per client UDP socket")
    args = parser.parse_args(argv)
    print("| observers | RSS before MB | RSS observing MB | RSS after one update each MB | KB per observer "
          "| KB per observer after updates | register s |")
    print("|---|---|---|---|---|---|---|")
    for count in (int(c) for c in args.observers.split(",")):
        with tempfile.TemporaryDirectory(prefix="coap-observers-") as workdir:
            r = measure(count, args.per_socket, Path(workdir))
        print(f"| {r['observers']:,} | {r['rss_before_mb']:.1f} | {r['rss_observing_mb']:.1f} | "
              f"{r['rss_after_updates_mb']:.1f} | {r['per_observer_kb']:.1f} | "
              f"{r['per_observer_after_updates_kb']:.1f} | {r['register_s']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
