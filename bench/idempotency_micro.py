"""In-process benchmark: what ``Idempotency-Key`` costs a request on sqlite storage (no server, no network).

Drives the REST app's WSGI callable (werkzeug's test client) on one mapping with ``idempotency`` on,
over real sqlite storage, one request at a time: requests without the header, with a new key each
(a receipt row written in the events' transaction, one lookup before), and retries of one key (a
lookup and the stored answer, nothing written). Prints wall-clock and CPU (``time.process_time``,
less sensitive to other load) µs per request, medians of ``--repeat`` runs, for each ``--durability``.
A measuring tool, not a test: it asserts nothing.

Run: ``python bench/idempotency_micro.py [--requests 2000] [--repeat 3] [--durability process,power]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from werkzeug.test import Client  # noqa: E402

from connectors.rest.config import load_rest_config  # noqa: E402
from connectors.rest.connector import RestConnector  # noqa: E402
from gateway.storage.memory import SizeLimits  # noqa: E402
from gateway.storage.sqlite import SqliteStorage  # noqa: E402
from gateway.uplink import GatewayUplink  # noqa: E402

CASES = ("no key", "new key", "replayed key")


class _Northbound:
    connected = True

    def stats(self) -> dict[str, Any]:
        return {}


def run(folder: str, durability: str, case: str, requests: int) -> tuple[float, float]:
    """Wall-clock and CPU µs per request of ``case`` on a fresh sqlite file."""
    rest = {"host": "127.0.0.1", "port": "8080", "mapping": [{
        "endpoint": "/data", "idempotency": {}, "converter": {
            "type": "json", "deviceNameExpression": "${name}",
            "timeseries": [{"type": "int", "key": "n", "value": "${n}"}]}}]}
    path = os.path.join(folder, "rest.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(rest, file)
    db = os.path.join(folder, f"{durability}-{case.replace(' ', '_')}-{time.monotonic_ns()}.db")
    storage = SqliteStorage(db, SizeLimits(10_000_000, 1 << 34), durability=durability)
    try:
        client = Client(RestConnector("bench", load_rest_config(path), GatewayUplink(storage, _Northbound())).app)
        body = {"name": "bench", "n": 1}
        if case == "replayed key":
            client.post("/data", json=body, headers={"Idempotency-Key": "k"})
        started, cpu = time.perf_counter(), time.process_time()
        for n in range(requests):
            headers = {} if case == "no key" else {"Idempotency-Key": "k" if case == "replayed key" else f"k{n}"}
            answer = client.post("/data", json=body, headers=headers)
            assert answer.status_code == 200, answer.get_data(as_text=True)
        return ((time.perf_counter() - started) / requests * 1e6, (time.process_time() - cpu) / requests * 1e6)
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--durability", default="process,power")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'durability':<10} {'case':<13} {'wall us':>8} {'cpu us':>8}  (medians of {args.repeat} x "
              f"{args.requests} requests)")
        for durability in args.durability.split(","):
            figures: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
            for _ in range(args.repeat):  # the cases alternate, so drifting load hits them alike
                for case in CASES:
                    figures[case].append(run(folder, durability, case, args.requests))
            for case in CASES:
                wall = statistics.median(f[0] for f in figures[case])
                cpu = statistics.median(f[1] for f in figures[case])
                print(f"{durability:<10} {case:<13} {wall:>8.0f} {cpu:>8.0f}")


if __name__ == "__main__":
    main()
