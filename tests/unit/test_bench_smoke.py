"""A few-second smoke run of bench/run.py: it runs end to end and every acknowledged message is delivered."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.systems import mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(mosquitto_binary() is None, reason="the benchmark needs mosquitto")
def test_smoke_run_delivers_every_acknowledged_message(tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    # the Python load generator finishes every request it starts, so delivered/acked is exactly 1.0
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--load", "python", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(out.read_text())
    assert {r["system"] for r in runs} == {"ceiling", "gateway-sqlite"}
    for run in runs:
        assert run["acknowledged"] > 0, run
        assert run["load"]["socket_errors"] == 0 and run["load"]["non_2xx"] == 0, run
    gateway = next(r for r in runs if r["system"] == "gateway-sqlite")
    assert gateway["delivered"] == gateway["expected"], gateway


@pytest.mark.skipif(mosquitto_binary() is None, reason="the benchmark needs mosquitto")
def test_rpc_smoke_every_rpc_gets_its_echo_reply(tmp_path: Path) -> None:
    """A real broker, gateway and HTTP target: 20 closed-loop devices for 1 s, every RPC answered correctly."""
    out = tmp_path / "rpc.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scenarios", "rpc", "--systems", "gateway-memory",
         "--rpc-devices", "20", "--duration", "1", "--warmup", "0.5", "--repeat", "1", "--load", "python",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert (run["scenario"], run["system"], run["connections"]) == ("rpc", "gateway-memory", 20)
    assert run["acknowledged"] > 20, run  # more than one round per device: the loop really closes
    assert run["load"]["non_2xx"] == 0 and run["load"]["socket_errors"] == 0, run  # no error, no missing reply
    assert 0 < run["load"]["p50_ms"] <= run["load"]["p99_ms"] <= run["load"]["max_ms"], run
    assert "RPCs/s" in done.stdout


@pytest.mark.skipif(mosquitto_binary() is None, reason="the benchmark needs mosquitto")
def test_coap_bench_smoke_every_2_01_is_delivered_and_observers_are_counted(tmp_path: Path) -> None:
    """bench/coap.py for 1 s per system (memory storage, 4 clients, 20 observers): every system answers,
    nothing answered 2.01/200 is lost, and the observers all got their first notification."""
    out = tmp_path / "coap.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "coap.py"), "--seconds", "1", "--warmup", "0.5", "--clients", "4",
         "--storage", "memory", "--observers", "20", "--pin", "off", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {r["system"]: r for r in report["runs"]}
    assert set(runs) == {"aiocoap", "aiocoap-lean", "http-memory", "coap-memory"}
    for run in runs.values():
        assert run["ok"] > 0 and run["codes"] == {}, run
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"], run
    for system in ("http-memory", "coap-memory"):
        assert runs[system]["delivered_ratio"] >= 1.0, runs[system]
    assert report["observe"]["observers"] == 19, report["observe"]  # one more observed first, in the baseline
    assert "KB per observing device" in done.stdout
