"""Bearer and HMAC endpoint security against the real daemon: good, missing, wrong and malformed credentials.

What ThingsBoard receives is observed with a real subscriber: refused requests leave nothing behind.
"""
from __future__ import annotations

import base64
import hmac
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_uplink import wait_until
from tests.fixtures.daemon import ROOT

TOKEN_A = "tok-A-7d1e9c0b2f4a4e61"
TOKEN_ENV = "tok-env-0a9b8c7d6e5f4321"
TOKEN_FILED = "tok-file-5c3b1a09e8d7f6a5"
SECRET = "hmac-secret-3f9a7c21b0d84e65"
CONVERTER = {"type": "json", "deviceNameExpression": "${dev}", "deviceTypeExpression": "meter",
             "attributes": [], "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


def mapping(endpoint: str, security: dict, **extra: object) -> dict:
    return {"endpoint": endpoint, "HTTPMethod": ["POST"], "security": security, "converter": CONVERTER, **extra}


def seqs(subscriber, device: str) -> list[int]:
    return [entry["values"]["seq"] for entry in subscriber.telemetry_for(device)]


def assert_only_marker_stored(subscriber, device: str, good: list[int]) -> None:
    """Once the last good request's data is at ThingsBoard, everything stored before it is too (in order)."""
    wait_until(subscriber, lambda: good[-1] in seqs(subscriber, device), timeout=10)
    assert seqs(subscriber, device) == good


def test_bearer_legacy_format_inline_env_and_file_tokens(make_daemon, mqtt_subscriber):
    rest = {"host": "127.0.0.1", "port": "0", "mapping": [
        mapping("/inline", {"type": "bearer", "tokens": [TOKEN_A, "${ENV:RGW_TEST_BEARER}"]}),
        mapping("/filed", {"type": "Bearer", "tokensFile": "tokens.txt"}),
    ]}
    gw = make_daemon(rest, start=False)
    Path(gw.workdir, "tokens.txt").write_text(f"# devices of hall 3\n\n  {TOKEN_FILED}  \n# {TOKEN_A}\n")
    gw.start(env={"RGW_TEST_BEARER": TOKEN_ENV})
    good = []
    for seq, (path, token) in enumerate([("/inline", TOKEN_A), ("/inline", TOKEN_ENV), ("/filed", TOKEN_FILED),
                                         ("/filed", TOKEN_FILED + "  ")], 1):
        answer = requests.post(gw.url(path), json={"dev": "bearer-dev", "seq": seq},
                               headers={"Authorization": f"bearer {token}"}, timeout=5)
        assert answer.status_code == 200, (path, answer.text)
        good.append(seq)
    refused = [
        ("/inline", None), ("/inline", "Bearer"), ("/inline", "Bearer "), ("/inline", f"Bearer {TOKEN_A}x"),
        ("/inline", f"Bearer {TOKEN_FILED}"), ("/filed", f"Bearer {TOKEN_A}"),  # a token of the other endpoint
        ("/inline", f"Basic {TOKEN_A}"), ("/inline", f"Bearer {TOKEN_A} {TOKEN_A}"),
        ("/inline", f"Bearer {TOKEN_A[:-1]}é"), ("/inline", "Bearer " + "x" * 60000),
        ("/inline", f"Bearer {TOKEN_A.upper()}"),  # tokens are case-sensitive
    ]
    for seq, (path, header) in enumerate(refused, 100):
        headers = {} if header is None else {"Authorization": header.encode("utf-8")}
        answer = requests.post(gw.url(path), json={"dev": "bearer-dev", "seq": seq}, headers=headers, timeout=5)
        assert answer.status_code == 401, (path, header and header[:40], answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        body = answer.json()
        assert body["status"] == 401 and "Bearer token" in body["error"]
        assert TOKEN_A not in answer.text
    missing = requests.post(gw.url("/inline"), json={"dev": "bearer-dev", "seq": 0}, timeout=5).json()
    assert "missing" in missing["error"]
    answer = requests.post(gw.url("/filed"), json={"dev": "bearer-dev", "seq": 5},
                           headers={"Authorization": f"Bearer {TOKEN_FILED}"}, timeout=5)
    assert answer.status_code == 200
    good.append(5)
    assert_only_marker_stored(mqtt_subscriber, "bearer-dev", good)
    assert gw.stop() == 0
    log = gw.log_text()
    leaks = [t for t in (TOKEN_A, TOKEN_ENV, TOKEN_FILED) if t in log]
    assert not leaks, f"tokens in the log: {leaks}"


DOC_SECRET = "change-me-to-a-long-random-secret"
SIGNED_CONVERTER = {"type": "json", "deviceInfo": {"deviceNameExpression": "${sensorName}",
                                                   "deviceProfileExpression": "meter"},
                    "attributes": [], "timeseries": [{"type": "double", "key": "temp", "value": "${temp}"}]}


def doc_example() -> str:
    """The shell snippet of docs/security.md's HMAC section, as users paste it."""
    text = (Path(ROOT) / "docs" / "security.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- hmac-example -->\n```sh\n(.*?)```", text, re.S)
    assert match, "docs/security.md lost its hmac example"
    return match.group(1)


def sign(body: bytes, ts: int | str, secret: str = DOC_SECRET, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), str(ts).encode() + b"." + body, algorithm).digest()


def next_second() -> None:
    """Wait for the next whole second: a timestamp of the second the gateway started in is older than its
    start, so it is refused (a replay from before the start cannot be ruled out)."""
    time.sleep(1 - time.time() % 1)


def signed_post(gw, body: bytes, ts: int, signature: str):
    headers = {"Content-Type": "application/json", "X-Timestamp": str(ts), "X-Signature": signature}
    return requests.post(gw.url("/signed"), data=body, headers=headers, timeout=5)


@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")), reason="needs openssl and curl")
def test_hmac_current_format_doc_example_and_every_refusal(make_daemon, mqtt_subscriber):
    rest = {"server": {"host": "127.0.0.1", "port": 0}, "mapping": [
        {"endpoint": "/signed", "HTTPMethods": ["POST"], "converter": SIGNED_CONVERTER,
         "security": {"type": "hmac", "secret": "${ENV:RGW_TEST_SIGNING}"}},
        {"endpoint": "/bearer", "HTTPMethods": ["POST"], "converter": CONVERTER,
         "security": {"type": "bearer", "tokens": [TOKEN_A]}}]}
    gw = make_daemon(rest, start=False)
    gw.start(env={"RGW_TEST_SIGNING": DOC_SECRET})
    next_second()
    # the documented snippet, verbatim but for the port
    script = doc_example().replace("127.0.0.1:5000", f"127.0.0.1:{gw.port}")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"stored": 1}, done.stdout
    # good: hex (both cases), base64 (standard, URL-safe without padding), with and without the prefix
    now = int(time.time())
    goods = []
    for temp, encode in enumerate([lambda d: d.hex(), lambda d: "sha256=" + d.hex().upper(),
                                   lambda d: base64.b64encode(d).decode(),
                                   lambda d: "SHA256=" + base64.urlsafe_b64encode(d).decode().rstrip("=")], 1):
        body = json.dumps({"sensorName": "SN-007", "temp": temp}).encode()
        answer = signed_post(gw, body, now, encode(sign(body, now)))
        assert answer.status_code == 200, answer.text
        goods.append(float(temp))
    body = json.dumps({"sensorName": "SN-007", "temp": 99}).encode()
    good_sig = sign(body, now).hex()
    refusals = [
        ({"signature": ""}, "missing X-Signature"),
        ({"ts": ""}, "missing X-Timestamp"),
        ({"ts": "12.5"}, "whole seconds"),
        ({"ts": "-5"}, "whole seconds"),
        ({"ts": "now"}, "whole seconds"),
        ({"signature": sign(body, now, "another-secret-of-32-characters!").hex()}, "does not match"),
        ({"signature": good_sig, "ts": now + 1}, "does not match"),  # the timestamp is signed too
        ({"signature": good_sig, "body": body.replace(b"99", b"98")}, "does not match"),  # so is the body
        ({"signature": "zz" * 32}, "does not match"), ({"signature": "sha256="}, "does not match"),
        ({"signature": "\u00e9t\u00e9"}, "does not match"), ({"signature": "=" * 5000}, "does not match"),
        ({"ts": now - 301, "signature": sign(body, now - 301).hex()}, " s old; at most 300 s"),
        ({"ts": now + 400, "signature": sign(body, now + 400).hex()}, "in the future"),
        ({"ts": "9" * 12, "signature": sign(body, "9" * 12).hex()}, "in the future"),
    ]
    for case, reason in refusals:
        headers = {"Content-Type": "application/json", "X-Timestamp": str(case.get("ts", now)),
                   "X-Signature": case.get("signature", good_sig)}
        headers = {k: v.encode("utf-8") for k, v in headers.items() if v}
        answer = requests.post(gw.url("/signed"), data=case.get("body", body), headers=headers, timeout=5)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("HMAC")
        assert reason in answer.json()["error"], (case, answer.json())
    # the good one once, then its replay (any encoding of the same signature) is refused
    assert signed_post(gw, body, now, good_sig).status_code == 200
    goods.append(99.0)
    for again in (good_sig, "sha256=" + base64.b64encode(bytes.fromhex(good_sig)).decode()):
        replay = signed_post(gw, body, now, again)
        assert replay.status_code == 401 and "replayed" in replay.json()["error"], replay.text
    # bearer in the 3.7+ format
    assert requests.post(gw.url("/bearer"), json={"dev": "b", "seq": 1}, timeout=5).status_code == 401
    assert requests.post(gw.url("/bearer"), json={"dev": "b", "seq": 1}, timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN_A}"}).status_code == 200
    wait_until(mqtt_subscriber, lambda: len(mqtt_subscriber.telemetry_for("SN-007")) >= 6, timeout=10)
    time.sleep(0.3)  # a refused request stored by mistake would arrive right after the last good one
    temps = [entry["values"]["temp"] for entry in mqtt_subscriber.telemetry_for("SN-007")]
    assert temps == [21.5, *goods], temps
    assert gw.stop() == 0
    assert DOC_SECRET not in gw.log_text()


def test_hmac_request_captured_before_a_sigkill_is_refused_after_the_restart(make_daemon, mqtt_subscriber):
    """The replay cache is in memory: the restarted daemon refuses what it cannot have seen, by its timestamp."""
    rest = {"server": {"host": "127.0.0.1", "port": 0}, "mapping": [
        {"endpoint": "/signed", "HTTPMethods": ["POST"], "converter": SIGNED_CONVERTER,
         "security": {"type": "hmac", "secret": DOC_SECRET}}]}
    gw = make_daemon(rest)
    next_second()
    captured_at = int(time.time())
    captured = json.dumps({"sensorName": "SN-KILL", "temp": 1}).encode()
    signature = sign(captured, captured_at).hex()
    assert signed_post(gw, captured, captured_at, signature).status_code == 200
    assert "replayed" in signed_post(gw, captured, captured_at, signature).json()["error"]
    gw.kill()
    gw.start()
    replay = signed_post(gw, captured, captured_at, signature)  # well inside maxSkewSeconds (300 s)
    assert replay.status_code == 401, replay.text
    assert replay.headers["Content-Type"].startswith("application/json")
    assert replay.headers["WWW-Authenticate"].startswith("HMAC")
    reason = replay.json()
    assert reason["status"] == 401 and "older than the gateway's start" in reason["error"], reason
    fresh_at = int(time.time()) + 1  # a device signs its retry again, with a timestamp after the start
    fresh = json.dumps({"sensorName": "SN-KILL", "temp": 2}).encode()
    answer = signed_post(gw, fresh, fresh_at, sign(fresh, fresh_at).hex())
    assert answer.status_code == 200, answer.text
    wait_until(mqtt_subscriber, lambda: 2.0 in [e["values"]["temp"] for e in mqtt_subscriber.telemetry_for("SN-KILL")],
               timeout=15)
    temps = [entry["values"]["temp"] for entry in mqtt_subscriber.telemetry_for("SN-KILL")]
    assert set(temps) == {1.0, 2.0} and temps.count(2.0) == 1, temps  # 1.0 may be re-sent after the SIGKILL
    assert gw.stop() == 0


def test_hmac_replays_stay_refused_over_a_reload_that_changes_security(make_daemon, mqtt_subscriber):
    """A reload that changes the endpoint's security but not its secret keeps the replay cache."""
    from tests.e2e.test_reload import sighup, wait_outcome, write_rest

    def rest(security: dict) -> dict:
        return {"server": {"host": "127.0.0.1", "port": 0}, "mapping": [
            {"endpoint": "/signed", "HTTPMethods": ["POST"], "converter": SIGNED_CONVERTER,
             "security": {"type": "hmac", "secret": DOC_SECRET, **security}}]}

    gw = make_daemon(rest({}))
    next_second()
    ts = int(time.time())
    body = json.dumps({"sensorName": "SN-RELOAD", "temp": 1}).encode()
    signature = sign(body, ts).hex()
    assert signed_post(gw, body, ts, signature).status_code == 200
    write_rest(gw, rest({"maxSkewSeconds": 120, "replayCacheSize": 5000}))  # a shorter window: entries still hold
    sighup(gw)
    wait_outcome(gw, "applied", 1)
    replay = signed_post(gw, body, ts, signature)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"], replay.text
    write_rest(gw, rest({"maxSkewSeconds": 600}))  # a longer one outlives the entries: older stamps refused
    sighup(gw)
    wait_outcome(gw, "applied", 2)
    replay = signed_post(gw, body, ts, signature)
    assert replay.status_code == 401 and "older than the gateway's start" in replay.json()["error"], replay.text
    fresh_at = int(time.time()) + 1
    fresh = json.dumps({"sensorName": "SN-RELOAD", "temp": 2}).encode()
    assert signed_post(gw, fresh, fresh_at, sign(fresh, fresh_at).hex()).status_code == 200
    assert gw.stop() == 0
