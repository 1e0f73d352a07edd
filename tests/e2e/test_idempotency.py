"""Idempotency-Key end to end: a real daemon with sqlite storage and a real broker playing ThingsBoard.

A retried POST with the same key gets the first answer and ThingsBoard sees one copy, also when the
daemon was SIGKILLed after the 200 and restarted; the same key with another body is a 422."""
from __future__ import annotations

import base64
from typing import Any

import requests

DEVICE = "Meter 7"


def rest(idempotency: dict[str, Any] | None = None, **mapping: Any) -> dict[str, Any]:
    entry = {"endpoint": "/data", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
             "idempotency": idempotency if idempotency is not None else {"windowSeconds": 3600},
             "converter": {"type": "json", "deviceNameExpression": "${name}", "deviceTypeExpression": "meter",
                           "timeseries": [{"type": "int", "key": "n", "value": "${n}"}]}}
    entry.update(mapping)
    return {"host": "127.0.0.1", "port": "0", "mapping": [entry]}


def post(gateway: Any, n: int, key: str | None, name: str = DEVICE, **headers: str) -> requests.Response:
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(gateway.url("/data"), json={"name": name, "n": n}, headers=headers, timeout=10)


def numbers(subscriber: Any, device: str = DEVICE) -> list[int]:
    return [entry["values"]["n"] for entry in subscriber.telemetry_for(device)]


def test_a_retry_gets_the_first_answer_and_thingsboard_one_copy(make_daemon, mqtt_subscriber) -> None:
    gateway = make_daemon(rest())
    first = post(gateway, 1, '"4a9c6b2e-0001"')
    assert first.status_code == 200 and first.json() == {"stored": 1}
    assert "Idempotent-Replayed" not in first.headers
    again = post(gateway, 1, '"4a9c6b2e-0001"')
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert post(gateway, 1, "4a9c6b2e-0001").headers.get("Idempotent-Replayed") == "true"  # bare = quoted
    # the same key for another request is refused; a new key is stored
    changed = post(gateway, 2, '"4a9c6b2e-0001"')
    assert changed.status_code == 422 and "different request" in changed.json()["error"]
    assert post(gateway, 2, '"4a9c6b2e-0002"').status_code == 200
    assert post(gateway, 3, None).status_code == 200  # without the header: as always
    assert post(gateway, 3, None).status_code == 200
    assert mqtt_subscriber.wait_for(lambda _m: len(numbers(mqtt_subscriber)) >= 4, 15)
    assert numbers(mqtt_subscriber) == [1, 2, 3, 3]
    bad = post(gateway, 4, 'has "quotes" inside')
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]
    assert post(gateway, 4, "x" * 256).status_code == 400


def test_sigkill_after_the_200_then_restart_still_one_copy(make_daemon, broker, mqtt_subscriber) -> None:
    gateway = make_daemon(rest(), storage={"type": "sqlite", "data_file_path": "./data/gateway.db",
                                           "durability": "process"})
    broker.stop()  # the data stays in storage: the retry after the restart must not add a second copy
    assert post(gateway, 1, "k-1").status_code == 200
    gateway.kill()
    broker.start()
    gateway.start()
    retry = post(gateway, 1, "k-1")
    assert retry.status_code == 200 and retry.json() == {"stored": 1}
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert post(gateway, 2, "k-2").status_code == 200  # a marker after the retry: when it arrives, all did
    assert mqtt_subscriber.wait_for(lambda _m: 2 in numbers(mqtt_subscriber), 30)
    assert numbers(mqtt_subscriber) == [1, 2]


def test_keys_are_per_credential_and_bounded(make_daemon, mqtt_subscriber) -> None:
    users = {"security": {"type": "bearer", "tokens": ["token-a", "token-b"]}}
    gateway = make_daemon(rest({"maxKeys": 2}, **users))
    a, b = {"Authorization": "Bearer token-a"}, {"Authorization": "Bearer token-b"}
    assert post(gateway, 1, "same", **a).status_code == 200
    assert post(gateway, 1, "same", **b).headers.get("Idempotent-Replayed") is None  # b's own key: stored
    assert post(gateway, 1, "same", **a).headers.get("Idempotent-Replayed") == "true"
    assert post(gateway, 1, "same", **{"Authorization": "Bearer wrong"}).status_code == 401
    # maxKeys 2 per credential: a third key evicts the oldest, whose retry is then stored again
    assert post(gateway, 2, "second", **a).status_code == 200
    assert post(gateway, 3, "third", **a).status_code == 200
    assert post(gateway, 1, "same", **a).headers.get("Idempotent-Replayed") is None
    assert post(gateway, 3, "third", **a).headers.get("Idempotent-Replayed") == "true"
    assert mqtt_subscriber.wait_for(lambda _m: len(numbers(mqtt_subscriber)) >= 5, 15)
    assert sorted(numbers(mqtt_subscriber)) == [1, 1, 1, 2, 3]


def test_a_refused_request_keeps_no_key(make_daemon, mqtt_subscriber) -> None:
    limited = {"rateLimit": {"requests": 1, "perSeconds": 3600}}
    gateway = make_daemon(rest(**limited))
    basic = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}  # anonymous: ignored, own scope
    assert post(gateway, 1, "k", **basic).status_code == 200
    assert post(gateway, 2, "k2", **basic).status_code == 429  # nothing stored: k2 is not remembered
    assert post(gateway, 1, "k", **basic).headers.get("Idempotent-Replayed") == "true"  # no token taken
    assert post(gateway, 2, "k2", **basic).status_code == 429  # still limited, still not a replay
    assert mqtt_subscriber.wait_for(lambda _m: numbers(mqtt_subscriber) == [1], 15)


def test_hmac_retries_are_signed_again_and_a_refused_key_frees_the_signature(make_daemon, mqtt_subscriber) -> None:
    import hashlib
    import hmac
    import json
    import time

    secret = "a-long-enough-shared-secret"
    gateway = make_daemon(rest(security={"type": "hmac", "secret": secret}))

    def signed(n: int, key: str, ts: int) -> requests.Response:
        body = json.dumps({"name": DEVICE, "n": n}).encode()
        signature = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        return requests.post(gateway.url("/data"), data=body, timeout=10, headers={
            "Content-Type": "application/json", "X-Timestamp": str(ts), "X-Signature": signature,
            "Idempotency-Key": key})

    now = int(time.time()) + 1  # not older than the gateway's start (a stamp of that second would be refused)
    assert signed(1, "bad\\key", now).status_code == 400  # refused: the signature is not kept as used
    first = signed(1, "k", now)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    assert signed(1, "k", now).status_code == 401  # the same signature again: hmac's replay refusal
    retry = signed(1, "k", now + 1)  # a retry signs again; the request (body) is the same
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert mqtt_subscriber.wait_for(lambda _m: numbers(mqtt_subscriber) == [1], 15)
