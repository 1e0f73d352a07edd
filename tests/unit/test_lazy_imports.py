"""A gateway that serves no CoAP does not load aiocoap (and asyncio with it): ~3 MB of RSS each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_daemon_and_the_rest_connector_load_without_aiocoap() -> None:
    code = ("import sys; import gateway.cli, gateway.daemon, connectors.rest.connector; "
            "print(sorted(m for m in ('aiocoap', 'asyncio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout.strip()
    assert out == "[]"
