"""A reload across several connectors applies everywhere or nowhere (an in-process daemon, a real broker)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
import yaml

from gateway.config.loader import load_config
from gateway.daemon import Daemon
from tests.fixtures.daemon import free_port


def _mapping(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "converter": {"type": "json", "deviceNameExpression": "${n}"}}


def _write(path: Path, port: int, *endpoints: str) -> None:
    path.write_text(json.dumps({"server": {"host": "127.0.0.1", "port": port},
                                "mapping": [_mapping(e) for e in endpoints]}), encoding="utf-8")


def test_one_connectors_restart_only_change_stops_every_connectors_reload(tmp_path: Path, broker: Any) -> None:
    port_a, port_b = free_port(), free_port()
    _write(tmp_path / "a.json", port_a, "/a")
    _write(tmp_path / "b.json", port_b, "/b")
    general = {"thingsboard": {"host": "127.0.0.1", "port": broker.port, "protocol": broker.protocol,
                               "security": {"accessToken": "gateway-token"}},
               "storage": {"type": "memory"}, "admin": {"port": 0},
               "connectors": [{"name": "A", "type": "rest", "configuration": "a.json"},
                              {"name": "B", "type": "rest", "configuration": "b.json"}]}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(general), encoding="utf-8")
    daemon = Daemon(load_config(str(tmp_path / "gateway.yaml"), env={}))
    daemon.start()
    try:
        def status(port: int, path: str) -> int:
            return requests.post(f"http://127.0.0.1:{port}{path}", json={"n": "dev"}, timeout=10).status_code

        _write(tmp_path / "a.json", port_a, "/a", "/a2")
        _write(tmp_path / "b.json", free_port(), "/b", "/b2")  # a new port: needs a restart
        result = daemon.reload("test")
        assert result.outcome == "restart_required"
        assert len(result.problems) == 1 and "b.json" in result.problems[0] and "port" in result.problems[0]
        assert (status(port_a, "/a2"), status(port_b, "/b2")) == (404, 404)  # neither connector changed
        assert (status(port_a, "/a"), status(port_b, "/b")) == (200, 200)

        _write(tmp_path / "b.json", port_b, "/b", "/b2")
        result = daemon.reload("test")
        assert result.outcome == "applied", result.problems
        assert (status(port_a, "/a2"), status(port_b, "/b2")) == (200, 200)
        assert daemon.reloader.stats()["counts"] == {"applied": 1, "unchanged": 0, "invalid": 0,
                                                     "restart_required": 1, "failed": 0}
    finally:
        daemon.stop()
