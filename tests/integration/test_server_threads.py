"""The REST listener's worker threads follow the storage when rest.json sets none (an in-process daemon)."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from connectors.rest.config import read_rest_config
from connectors.rest.model import THREADS_WHEN_STORE_IS_IMMEDIATE, THREADS_WHEN_STORE_WAITS, ServerConfig
from connectors.rest.summary import rest_summary
from gateway.config.loader import load_config
from gateway.daemon import Daemon
from tests.fixtures.daemon import free_port


def _waitress_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("waitress-")}


def _started_threads(tmp_path: Path, broker: Any, storage: dict[str, Any], server: dict[str, Any]) -> int:
    """Start a daemon with ``storage`` and one endpoint; how many waitress workers it started."""
    port = free_port()
    rest = {"server": {"host": "127.0.0.1", "port": port, **server},
            "mapping": [{"endpoint": "/t", "converter": {"type": "json", "deviceNameExpression": "${n}"}}]}
    (tmp_path / "rest.json").write_text(json.dumps(rest), encoding="utf-8")
    general = {"thingsboard": {"host": "127.0.0.1", "port": broker.port, "protocol": broker.protocol,
                               "security": {"accessToken": "gateway-token"}},
               "storage": storage, "admin": {"port": 0},
               "connectors": [{"name": "REST", "type": "rest", "configuration": "rest.json"}]}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(general), encoding="utf-8")
    before = _waitress_threads()
    daemon = Daemon(load_config(str(tmp_path / "gateway.yaml"), env={}))
    daemon.start()
    try:
        started = len(_waitress_threads() - before)
        # the workers serve: a request is stored and answered
        assert requests.post(f"http://127.0.0.1:{port}/t", json={"n": "d"}, timeout=10).status_code == 200
        return started
    finally:
        daemon.stop()


def test_the_default_is_32_when_storing_waits_for_a_commit_and_16_when_it_does_not() -> None:
    assert (ServerConfig().threads_for(store_waits=True), ServerConfig().threads_for(store_waits=False)) == (32, 16)
    assert ServerConfig(threads=5).threads_for(store_waits=True) == 5
    assert ServerConfig(threads=40).threads_for(store_waits=False) == 40


@pytest.mark.parametrize(("storage", "server", "expected"), [
    ({"type": "memory"}, {}, THREADS_WHEN_STORE_IS_IMMEDIATE),
    ({"type": "sqlite", "data_file_path": "data/gw.db"}, {}, THREADS_WHEN_STORE_WAITS),
    ({"type": "sqlite", "data_file_path": "data/gw.db", "durability": "process"}, {}, THREADS_WHEN_STORE_WAITS),
    ({"type": "memory"}, {"threads": 32}, 32),
    ({"type": "sqlite", "data_file_path": "data/gw.db"}, {"threads": 5}, 5),
])
def test_the_daemon_starts_the_storages_default_unless_rest_json_sets_threads(
        tmp_path: Path, broker: Any, storage: dict[str, Any], server: dict[str, Any], expected: int) -> None:
    assert _started_threads(tmp_path, broker, storage, server) == expected


def _read(tmp_path: Path, server: dict[str, Any], **mapping: Any) -> Any:
    rest = {"server": {"port": 5000, **server}, "mapping": [
        {"endpoint": "/t", "converter": {"type": "json", "deviceNameExpression": "${n}"}, **mapping}]}
    (tmp_path / "rest.json").write_text(json.dumps(rest), encoding="utf-8")
    return read_rest_config(str(tmp_path / "rest.json"))


def test_check_names_both_defaults_and_the_connection_room_assumes_the_larger(tmp_path: Path) -> None:
    config, problems = _read(tmp_path, {})
    assert not problems.errors
    assert "32 threads with SQLite storage, 16 with memory, 1000 connections" in "\n".join(rest_summary(config))
    config, _ = _read(tmp_path, {"threads": 5})
    assert "5 threads, 1000 connections" in "\n".join(rest_summary(config))
    # the storage is not known where rest.json is checked: room for the larger default is asked
    waiting = {"response": {"responseExpected": True, "responseAttribute": "r"}}
    _, problems = _read(tmp_path, {"connectionLimit": 280}, **waiting)
    assert any("at least 288 (maxWaitingResponses 256 + threads 32)" in str(p) for p in problems.errors)
    _, problems = _read(tmp_path, {"connectionLimit": 280, "threads": 16}, **waiting)
    assert not problems.errors
