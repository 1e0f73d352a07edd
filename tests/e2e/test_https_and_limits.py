"""HTTPS endpoints through the real daemon, and 503 + Retry-After when storage is full."""
from __future__ import annotations

import os
import time

import pytest
import requests

from tests.e2e.test_uplink import AUTH, SPEC_BODY, json_mapping, published, shipped_rest, wait_until
from tests.fixtures.certs import write_cert


@pytest.mark.parametrize("layout", ["legacy", "current"])
def test_https_endpoint_with_basic_auth(make_daemon, mqtt_subscriber, tmp_path, layout):
    cert, key = write_cert(tmp_path, "gateway")
    rest = shipped_rest()
    if layout == "legacy":
        rest.update({"SSL": True, "security": {"cert": cert, "key": key}})
    else:
        mapping = rest.pop("mapping")
        rest = {"server": {"host": "127.0.0.1", "port": 0, "SSL": True, "security": {"cert": cert, "key": key}},
                "mapping": [dict(m, HTTPMethods=m.pop("HTTPMethod")) for m in mapping]}
    gw = make_daemon(rest, start=False)
    gw.start(scheme="https", verify=cert)
    url = f"https://127.0.0.1:{gw.port}/my_devices"
    assert requests.post(url, json=SPEC_BODY, timeout=5, verify=cert).status_code == 401
    answer = requests.post(url, json=SPEC_BODY, auth=AUTH, timeout=5, verify=cert)
    assert answer.status_code == 200 and answer.json() == {"stored": 1}
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://127.0.0.1:{gw.port}/my_devices", json=SPEC_BODY, auth=AUTH, timeout=5)
    wait_until(mqtt_subscriber, lambda: published(mqtt_subscriber, "v1/gateway/telemetry"), timeout=10)
    assert published(mqtt_subscriber, "v1/gateway/telemetry")[0]["SN-001"][0]["values"]["temperature"] == 32.0


def test_missing_certificate_refuses_to_start(make_daemon, tmp_path):
    rest = dict(shipped_rest(), SSL=True, security={"cert": str(tmp_path / "nope.crt"), "key": "~/nope.key"})
    gw = make_daemon(rest, start=False)
    with pytest.raises(AssertionError, match="nope.crt"):
        gw.start()
    assert gw.proc.returncode == 1


CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


@pytest.mark.parametrize("storage_type", ["memory", "sqlite"])
def test_full_storage_answers_503_and_recovers(make_daemon, broker, mqtt_subscriber, storage_type):
    """Prints ``acknowledged= delivered= duplicates=`` for docs/reliability.md (bench/reliability_table.py)."""
    storage = {"type": storage_type, "max_records_count": 5, "data_file_path": "./data/gw.db"}
    gw = make_daemon(json_mapping(CONVERTER), storage=storage)
    broker.stop()
    url = gw.url("/data")
    acked: list[int] = []
    for seq in range(5):
        assert requests.post(url, json={"dev": "d", "seq": seq}, timeout=5).status_code == 200
        acked.append(seq)
    full = requests.post(url, json={"dev": "d", "seq": 5}, timeout=5)
    assert full.status_code == 503
    assert int(full.headers["Retry-After"]) > 0 and "full" in full.json()["error"]
    # an array that does not fit is refused whole, never half stored
    assert requests.post(url, json=[{"dev": "d", "seq": 6}, {"dev": "d", "seq": 7}], timeout=5).status_code == 503
    broker.start()

    def seqs() -> list[int]:
        return [e["values"]["seq"] for e in mqtt_subscriber.telemetry_for("d")]

    drained = wait_until(mqtt_subscriber, lambda: seqs() if len(set(seqs())) >= 5 else None, timeout=20)
    assert list(dict.fromkeys(drained)) == acked  # in order (first arrivals; at-least-once may repeat)
    # delivered is not yet removed: the PUBACK comes back first; /health tells when storage is empty
    deadline = time.monotonic() + 10
    while requests.get(gw.url("/health"), timeout=5).json()["storage"]["events"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests.post(url, json={"dev": "d", "seq": 8}, timeout=5).status_code == 200
    acked.append(8)
    wait_until(mqtt_subscriber, lambda: 8 in seqs())
    got = seqs()
    delivered = set(got) & set(acked)
    print(f"acknowledged={len(acked)} delivered={len(delivered)} duplicates={len(got) - len(set(got))}")
    assert delivered == set(acked), f"acknowledged but lost: {sorted(set(acked) - delivered)}"
    assert not set(got) - set(acked), f"delivered but refused with 503: {sorted(set(got) - set(acked))}"


def test_unwritable_storage_refuses_to_start_with_a_clear_error(make_daemon, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data folder should be")
    gw = make_daemon(json_mapping(CONVERTER), start=False,
                     storage={"type": "sqlite", "data_file_path": os.path.join(str(blocker), "gw.db")})
    with pytest.raises(AssertionError, match="blocker"):
        gw.start()
    assert gw.proc.returncode == 1


def _small_file_size_limit() -> None:
    """In the daemon's process: files may not grow past 256 KiB, and writing past it fails (no signal)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_disk_error_at_run_time_answers_503_and_the_daemon_lives_on(make_daemon, broker, tmp_path):
    gw = make_daemon(json_mapping(CONVERTER), start=False)
    gw.start(preexec=_small_file_size_limit)
    broker.stop()  # nothing drains, so the database only grows until the disk "fills"
    url = gw.url("/data")
    session = requests.Session()
    statuses = []
    for seq in range(5000):
        answer = session.post(url, json={"dev": "d", "seq": seq, "pad": "x" * 200}, timeout=10)
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            break
    assert statuses[-1] == 503, statuses[-5:]
    assert int(answer.headers["Retry-After"]) > 0
    assert "storage cannot write" in answer.json()["error"]
    assert statuses.count(200) > 10
    health = requests.get(gw.url("/health"), timeout=5)
    assert health.status_code in (200, 503)  # the daemon answers: no crash
    assert gw.proc.poll() is None
    assert requests.post(url, json={"dev": "d", "seq": -1, "pad": "x" * 200}, timeout=10).status_code == 503
    assert "puts are refused until the cause is fixed" in gw.log_text()
    ready = requests.get(gw.admin_url("/readyz"), timeout=5)  # not writable: not ready, but alive
    assert ready.status_code == 503 and ready.json()["checks"]["storage"]["ok"] is False, ready.text
    assert ready.json()["checks"]["storage"]["reason"] == "the last commit failed: new data is refused (503)"
    assert requests.get(gw.admin_url("/healthz"), timeout=5).status_code == 200
    session.close()
