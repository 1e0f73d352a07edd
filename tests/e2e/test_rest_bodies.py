"""Request bodies the reference accepts, against the daemon process: gzip-encoded (bounded after
decompression), urlencoded and multipart/form-data fields (files refused with a clear error)."""
from __future__ import annotations

import gzip
import zlib

import pytest
import requests

LIMIT = 128 * 1024
REST = {"host": "127.0.0.1", "maxBodySize": LIMIT, "mapping": [{
    "endpoint": "/in", "converter": {
        "type": "json", "deviceNameExpression": "${name}",
        "attributes": [{"type": "string", "key": "note", "value": "${note}"}],
        "timeseries": [{"type": "double", "key": "t", "value": "${t}"},
                       {"type": "json", "key": "cfg", "value": "${cfg}"}]}}]}


@pytest.fixture
def gateway(make_daemon):
    return make_daemon(REST)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def post(gw, body: bytes, **headers: str) -> requests.Response:
    return requests.post(gw.url("/in"), data=body, headers=headers, timeout=30)


def test_gzip_bodies_and_a_gzip_bomb(gateway, mqtt_subscriber) -> None:
    answer = post(gateway, gzip.compress(b'{"name": "G1", "t": 21.5}'), **{"Content-Encoding": "gzip",
                                                                          "Content-Type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, {"stored": 1})
    deflated = post(gateway, zlib.compress(b'{"name": "G2", "t": 1}'), **{"Content-Encoding": "deflate"})
    assert deflated.status_code == 200
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("G2"), 15)
    assert mqtt_subscriber.telemetry_for("G1")[0]["values"] == {"t": 21.5}

    # ~100 KiB on the wire (under maxBodySize), 100 MiB once expanded
    bomb = gzip.compress(b'{"name": "B", "t": 1, "pad": "' + b"0" * (100 * 1024 * 1024) + b'"}', 9)
    assert len(bomb) < LIMIT
    before = peak_rss_kib(gateway.proc.pid)
    refused = post(gateway, bomb, **{"Content-Encoding": "gzip"})
    assert refused.status_code == 413 and "once decompressed" in refused.json()["error"]
    assert peak_rss_kib(gateway.proc.pid) - before < 20 * 1024  # never expanded in memory

    truncated = post(gateway, gzip.compress(b'{"name": "B", "t": 1}')[:-6], **{"Content-Encoding": "gzip"})
    assert truncated.status_code == 400 and "gzip" in truncated.json()["error"]
    other = post(gateway, b'{"name": "B", "t": 1}', **{"Content-Encoding": "br"})
    assert other.status_code == 415 and "'br'" in other.json()["error"]
    assert requests.get(gateway.url("/health"), timeout=10).status_code == 200
    assert not mqtt_subscriber.telemetry_for("B")


def test_form_and_multipart_fields(gateway, mqtt_subscriber) -> None:
    form = requests.post(gateway.url("/in"), data={"name": "F1", "t": "3.5", "note": "hi"}, timeout=10)
    assert form.status_code == 200
    multipart = requests.post(gateway.url("/in"), files={
        "name": (None, "M1"), "t": (None, "7"), "note": (None, "caf\u00e9".encode(), "text/plain; charset=utf-8"),
        "cfg": (None, b'{"mode": "eco", "levels": [1, 2]}', "application/json")}, timeout=10)
    assert (multipart.status_code, multipart.json()) == (200, {"stored": 1})
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("M1")
                                    and mqtt_subscriber.telemetry_for("F1"), 15)
    assert mqtt_subscriber.telemetry_for("M1")[0]["values"] == {"t": 7.0, "cfg": {"mode": "eco", "levels": [1, 2]}}
    assert mqtt_subscriber.attributes_for("M1") == {"note": "caf\u00e9"}
    assert mqtt_subscriber.telemetry_for("F1")[0]["values"] == {"t": 3.5}

    with_file = requests.post(gateway.url("/in"), files={
        "name": (None, "M2"), "t": (None, "1"), "firmware": ("fw.bin", b"\x00\x01", "application/octet-stream")},
        timeout=10)
    assert with_file.status_code == 400
    assert "'firmware' is a file ('fw.bin')" in with_file.json()["error"]
    bad_json = requests.post(gateway.url("/in"), files={"name": (None, "M3"), "cfg": (None, b"{", "application/json")},
                             timeout=10)
    assert bad_json.status_code == 400 and "field 'cfg'" in bad_json.json()["error"]
    cut = post(gateway, b"--xyz\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nM4\r\n",
               **{"Content-Type": "multipart/form-data; boundary=xyz"})
    assert cut.status_code == 400 and "multipart" in cut.json()["error"]
    assert requests.post(gateway.url("/in"), json={"name": "M5", "t": 2}, timeout=10).status_code == 200
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("M5"), 15)
    assert not any(mqtt_subscriber.telemetry_for(d) for d in ("M2", "M3", "M4"))
