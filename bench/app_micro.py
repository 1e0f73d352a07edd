"""In-process microbenchmark: CPU µs per request of the WSGI apps (ceiling vs gateway), no server, no network.

It drives each app's WSGI callable directly with a prepared environ, so what it measures is the
per-request CPU of Flask/werkzeug + the REST handler + the converter + memory storage — the part
of the HTTP side that the end-to-end benchmark (bench/run.py) cannot separate from waitress and the
kernel. Figures are ``time.process_time`` per request over ``--requests`` requests, median of
``--repeat`` runs, so other load on the machine inflates them much less than wall-clock time would.

Run: ``python bench/app_micro.py`` (``--profile`` adds a cProfile of the gateway app; ``--metrics``
adds the gateway app with request metrics on, as when the admin listener is enabled; ``--statistics``
the gateway app with the statistics counting on, as with ``statistics.enable``; ``--device-api`` the
device API's telemetry post to the same app, row ``devapi``).
This is a measuring tool, not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.ceiling_app import create_app as create_ceiling_app  # noqa: E402
from bench.scenarios import DEVICE_API_BODY, DEVICE_API_PATH, DEVICE_TOKEN, ENDPOINT, SCENARIOS  # noqa: E402
from connectors.rest.config import load_rest_config  # noqa: E402
from connectors.rest.connector import RestConnector  # noqa: E402
from gateway.statistics.counting import ConnectorCounts  # noqa: E402
from gateway.storage.memory import MemoryStorage, SizeLimits  # noqa: E402
from gateway.uplink import GatewayUplink  # noqa: E402

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Northbound:
    """Stands in for the MQTT client: the app only asks it for stats."""

    connected = True

    def stats(self) -> dict[str, Any]:
        return {}


#: the device API's telemetry request of ``--device-api``: bench/run.py's devapi scenario
DEVICE_PATH = DEVICE_API_PATH
DEVICE_BODY = DEVICE_API_BODY.encode()


def gateway_app(converter: dict[str, Any], storage: MemoryStorage, metrics: bool = False,
                statistics: bool = False) -> WsgiApp:
    """The gateway's WSGI app for one anonymous POST mapping at ENDPOINT, over memory storage.

    It also serves the device API (``deviceApi``) with one device, DEVICE_TOKEN, as bench/run.py's
    ``devapi`` scenario does. ``statistics``: the uplink counts for the statistics telemetry, as with
    ``statistics.enable``.
    """
    mapping = {"endpoint": ENDPOINT, "HTTPMethods": ["POST"], "security": {"type": "anonymous"},
               "converter": converter}
    device_api = {"devices": [{"accessToken": DEVICE_TOKEN, "deviceName": "Device API bench"}]}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rest.json")
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"host": "127.0.0.1", "port": "8080", "mapping": [mapping], "deviceApi": device_api}, file)
        config = load_rest_config(path)
    uplink: Any = GatewayUplink(storage, _Northbound()).for_connector(
        "bench", ConnectorCounts("bench") if statistics else None)
    connector = RestConnector("bench", config, uplink,
                              [os.path.join(ROOT, "extensions")], metrics=metrics)
    return connector.app


def _environ(body: bytes, path: str = ENDPOINT) -> dict[str, Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "HTTP_HOST": "bench"}


def run_once(app: WsgiApp, body: bytes, requests: int, storage: MemoryStorage,
             path: str = ENDPOINT) -> tuple[float, str]:
    """CPU µs per request over ``requests`` requests (after a 10 % warm-up), and the last status."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    def drain() -> None:
        events = storage.peek(100_000)
        if events:
            storage.remove_through(events[-1].id)

    for _ in range(max(1, requests // 10)):
        b"".join(app(_environ(body, path), start_response))
    drain()
    started = time.process_time()
    for i in range(requests):
        b"".join(app(_environ(body, path), start_response))
        if i % 1000 == 999:
            drain()  # keep the memory storage small, as the MQTT sender would
    elapsed = time.process_time() - started
    drain()
    return elapsed / requests * 1e6, statuses[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per app; the median is printed")
    parser.add_argument("--scenarios", default="main,wide", help="comma-separated (default main,wide)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the gateway app")
    parser.add_argument("--metrics", action="store_true", help="also run the gateway app with request metrics on")
    parser.add_argument("--statistics", action="store_true",
                        help="also run the gateway app with the statistics counting (statistics.enable) on")
    parser.add_argument("--device-api", action="store_true",
                        help="also post the device API's telemetry (POST /api/v1/{token}/telemetry) to the same "
                             "gateway app (row devapi)")
    args = parser.parse_args()

    storage = MemoryStorage(SizeLimits(10**9, 10**12))
    ceiling = create_ceiling_app()
    for name in args.scenarios.split(","):
        scenario = SCENARIOS[name]
        if scenario.fixed_body is None:
            raise SystemExit(f"scenario {name} has no fixed body; use main or wide")
        body = scenario.fixed_body.encode()
        app = gateway_app(scenario.converter, storage)
        # label -> (app, body, path)
        apps: dict[str, tuple[WsgiApp, bytes, str]] = {"ceiling": (ceiling, body, ENDPOINT),
                                                       "gateway": (app, body, ENDPOINT)}
        if args.metrics:
            apps["gw+metr"] = (gateway_app(scenario.converter, storage, metrics=True), body, ENDPOINT)
        if args.statistics:
            apps["gw+stat"] = (gateway_app(scenario.converter, storage, statistics=True), body, ENDPOINT)
        if args.device_api:
            apps["devapi"] = (app, DEVICE_BODY, DEVICE_PATH)
        results: dict[str, list[float]] = {label: [] for label in apps}
        status = {}
        for _ in range(args.repeat):  # interleaved, so machine noise hits both alike
            for label, (wsgi, sent, path) in apps.items():
                micros, status[label] = run_once(wsgi, sent, args.requests, storage, path)
                results[label].append(micros)
        for label, runs in results.items():
            print(f"{name:5} {label:8} {statistics.median(runs):7.1f} µs/request (median of {len(runs)}: "
                  f"{', '.join(f'{r:.1f}' for r in runs)}) -> {status[label]}")
        if args.profile:
            for label in ("gateway", "devapi") if args.device_api else ("gateway",):
                wsgi, sent, path = apps[label]
                print(f"--- cProfile: {label}")
                profile = cProfile.Profile()
                profile.enable()
                run_once(wsgi, sent, args.requests // 2, storage, path)
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
