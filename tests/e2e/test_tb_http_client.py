"""ThingsBoard's own HTTP client (``tb_device_http.TBHTTPDevice`` of PyPI ``tb-mqtt-client``), unchanged,
runs its firmware update against the daemon's device API; a real broker carries the gateway API and a
real MQTT client plays ThingsBoard (it answers the shared fw_* attribute request).

The client runs in a child process: its publish worker thread never ends (its loop only checks the stop
event after a queue timeout that cannot happen), and it writes the firmware to ``./<fw_title>``."""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

# installed with --no-deps (its tb-paho-mqtt-client dependency would replace paho-mqtt 2.x); sdk_utils
# pip-installs mmh3 at import time when it is missing, so both must be present
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tb_device_http") is None or importlib.util.find_spec("mmh3") is None,
    reason="tb_device_http cannot be imported: pip install --no-deps tb-mqtt-client mmh3")

TOKEN = "TB_HTTP_CLIENT_TOKEN_3"
DEVICE = "Pump 4"
TITLE, VERSION = "PUMP_FW", "2.1"
FIRMWARE = b"\x7fELF" + bytes(range(256)) * 3 + b"tail"  # 776 bytes: not a multiple of the chunk size
STATES = ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED"]

CLIENT = """
import logging, sys
from tb_device_http import TBHTTPDevice

logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
device = TBHTTPDevice(sys.argv[1], sys.argv[2], chunk_size=int(sys.argv[3]))
if not device.connect():
    sys.exit(3)
device.get_firmware_update()
device._TBHTTPDevice__worker["publish"]["queue"].join()  # every queued telemetry POST answered 200
"""


@pytest.fixture
def gateway(make_daemon, tmp_path: Path):
    folder = tmp_path / "firmware" / TITLE / VERSION
    folder.mkdir(parents=True)
    (folder / "pump.bin").write_bytes(FIRMWARE)
    rest = {"host": "127.0.0.1", "deviceApi": {
        "devices": [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "pump"}],
        "firmware": {"path": str(tmp_path / "firmware")}}}
    return make_daemon(rest)


def play_thingsboard(subscriber, shared: dict[str, Any], stop: threading.Event) -> threading.Thread:
    """Answer every shared-attribute request of the gateway from ``shared``, as ThingsBoard does."""
    def run() -> None:
        answered: set[int] = set()
        while not stop.is_set():
            pending: list[dict] = []

            def asked(messages, pending=pending) -> bool:
                pending[:] = [b for t, b, _ in messages if t == "v1/gateway/attributes/request"
                              and b["id"] not in answered]
                return bool(pending)

            if not subscriber.wait_for(asked, 0.5):
                continue
            for request in pending:
                answered.add(request["id"])
                found = {} if request["client"] else {k: v for k, v in shared.items() if k in request["keys"]}
                subscriber.publish("v1/gateway/attributes/response",
                                   {"id": request["id"], "device": request["device"], "values": found})

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("chunk_size", [0, 100], ids=["whole-file", "chunked"])
def test_tb_http_device_firmware_update_reaches_updated(gateway, mqtt_subscriber, tmp_path: Path,
                                                        chunk_size: int) -> None:
    shared = {"fw_title": TITLE, "fw_version": VERSION, "fw_size": len(FIRMWARE),
              "fw_checksum": hashlib.sha256(FIRMWARE).hexdigest(), "fw_checksum_algorithm": "SHA256"}
    workdir = tmp_path / "device"
    workdir.mkdir()
    stop = threading.Event()
    helper = play_thingsboard(mqtt_subscriber, shared, stop)
    try:
        done = subprocess.run([sys.executable, "-c", CLIENT, gateway.base_url, TOKEN, str(chunk_size)],
                              cwd=workdir, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=""))
    finally:
        stop.set()
        helper.join(5)
    assert done.returncode == 0, done.stdout + done.stderr + gateway.log_text()
    assert "Checksum verified!" in done.stdout, done.stdout
    assert (workdir / TITLE).read_bytes() == FIRMWARE
    # what the client published, in order (it logs each POST it got a 200 for)
    published = [ast.literal_eval(m) for m in re.findall(r"Published (\{.*\}) to telemetry", done.stdout)]
    assert len(published) == 6 and published[-1]["values"] == {
        "current_fw_title": TITLE, "current_fw_version": VERSION, "fw_state": "UPDATED"}
    # ... is what ThingsBoard gets on v1/gateway/telemetry, nulls skipped as ThingsBoard does (so the
    # first POST, all nulls, carries nothing)
    expected = [{"ts": e["ts"], "values": {k: v for k, v in e["values"].items() if v is not None}}
                for e in published]
    expected = [e for e in expected if e["values"]]
    assert len(expected) == 5
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for(DEVICE)) >= 5, 15), \
        mqtt_subscriber.telemetry_for(DEVICE)
    assert mqtt_subscriber.telemetry_for(DEVICE) == expected
    # the client queues one shared dict and mutates it, so which middle states it sends depends on its
    # worker's timing; they always come in order and end with UPDATED
    seen = [e["values"]["fw_state"] for e in published if "fw_state" in e["values"]]
    assert seen[-1] == "UPDATED" and seen == sorted(seen, key=STATES.index), seen
    # one attribute request for all five firmware keys (sent as repeated sharedKeys parameters)
    asked = mqtt_subscriber.on("v1/gateway/attributes/request")
    assert [(r["device"], r["client"], sorted(r["keys"])) for r in asked] == [(DEVICE, False, sorted(shared))]
    assert TOKEN not in gateway.log_text()
