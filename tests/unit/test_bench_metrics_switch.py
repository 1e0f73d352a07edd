"""bench/run.py --metrics: which systems run, and that a -nometrics gateway really has no admin listener."""
from __future__ import annotations

from pathlib import Path

import yaml

from bench.run import expand_durability, expand_metrics, parse_args
from bench.systems import GatewayServer, Mosquitto, gateway_metrics, gateway_system


def test_both_runs_every_gateway_system_with_and_without_metrics_and_the_ceiling_once() -> None:
    systems = expand_durability(["ceiling", "gateway-sqlite", "gateway-memory"], ["power", "process"])
    assert expand_metrics(systems, "on") == systems  # the default: names (and results) as before
    assert expand_metrics(systems, "both") == [
        "ceiling", "gateway-sqlite", "gateway-sqlite-nometrics", "gateway-sqlite-process",
        "gateway-sqlite-process-nometrics", "gateway-memory", "gateway-memory-nometrics"]
    assert expand_metrics(["ceiling", "gateway-memory"], "off") == ["ceiling", "gateway-memory-nometrics"]
    assert gateway_system("gateway-sqlite-process-nometrics") == ("sqlite", "process")
    assert gateway_metrics("gateway-sqlite") and not gateway_metrics("gateway-sqlite-nometrics")
    assert parse_args([]).metrics == "on" and parse_args(["--metrics", "both"]).metrics == "both"


def test_a_gateway_without_metrics_is_configured_with_the_admin_listener_off(tmp_path: Path) -> None:
    broker = Mosquitto(str(tmp_path))  # only its port is read: nothing is started
    ports = {}
    for metrics in (True, False):
        folder = tmp_path / str(metrics)
        folder.mkdir()
        server = GatewayServer(str(folder), None, "memory", broker, {"endpoint": "/x"}, None, metrics=metrics)
        ports[server.name] = yaml.safe_load(Path(server.config_path).read_text())["admin"]["port"]
    assert ports["gateway-memory-nometrics"] == 0  # port 0: no listener, no request counting
    assert ports["gateway-memory"] > 0
