"""Code a gateway may never use is loaded only when used: aiocoap (and asyncio) ~3 MB of RSS, requests ~5 MB."""
from __future__ import annotations

import json
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


# a REST connector built from a rest.json, started and stopped; then its downlink's HTTP client asked for
REST_CONNECTOR_RUN = """
import json, os, socket, sys, tempfile, types
from connectors.rest.config import load_rest_config
from connectors.rest.connector import RestConnector
path = os.path.join(tempfile.mkdtemp(), "rest.json")
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
rest = {"host": "127.0.0.1", "port": port,
        "mapping": [{"endpoint": "/t", "converter": {"type": "json", "deviceNameExpression": "${n}"}}]}
rest.update(json.loads(sys.argv[1]))
with open(path, "w") as fh:
    json.dump(rest, fh)
uplink = types.SimpleNamespace(report_marks=lambda scope: [])  # nothing is posted here
connector = RestConnector("REST", load_rest_config(path), uplink)
connector.start()
connector.stop()
print("requests" in sys.modules, end=" ")
connector.downlink.relay()
print("requests" in sys.modules)
"""


def test_requests_is_loaded_only_when_a_relay_is_made() -> None:
    """requests and urllib3 are ~5 MB of RSS; only attributeUpdates and serverSideRpc relays use them."""
    downlink = {"attributeUpdates": [{"deviceNameFilter": ".*", "attributeFilter": ".*",
                                      "requestUrlExpression": "http://127.0.0.1:1/${attributeKey}",
                                      "valueExpression": "${attributeValue}"}]}
    for extra in ({}, downlink):
        out = subprocess.run([sys.executable, "-c", REST_CONNECTOR_RUN, json.dumps(extra)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False True"
