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
