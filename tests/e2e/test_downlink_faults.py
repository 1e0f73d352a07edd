"""Downlink targets that reset connections or answer garbage: the relay fails cleanly, others go on.

The daemon runs as a process against a real broker playing ThingsBoard; each faulty target is a
real socket server (tests/fixtures/bad_http_target.py) and a well-behaved HttpTarget serves a
"good" device all along. Each test prints ``downlink: relayed=N replied=M errors=K`` (RPCs
published, replies received, error replies) for docs/reliability.md (bench/reliability_table.py).
"""
from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.bad_http_target import MODES, BadHttpTargets
from tests.fixtures.broker import Broker, Subscriber
from tests.fixtures.certs import write_cert
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.http_target import HttpTarget

UPDATE_VALUE = "{\"deviceName\":\"${deviceName}\",\"${attributeKey}\":\"${attributeValue}\"}"
TRIES = 2
RPC_TIMEOUT = 0.5
RESPONSE_TIMEOUT = 3
FAST_MODES = tuple(m for m in MODES if m != "drip")  # each try ends with an error of its own
# the reason each fault gives (in the reply and the log): never the target's own bytes
REASONS = {"reset": "the connection to {host} was reset", "reset_mid": "the connection to {host} was reset",
           "garbage": "{host} did not answer valid HTTP", "truncated": "the response of {host} was cut short",
           "endless_headers": "{host} did not answer valid HTTP"}


def device_prefix(mode: str) -> str:
    return mode.upper().replace("_", "")


def rest_config(good: str, bad: BadHttpTargets, tls_good: str) -> dict[str, Any]:
    update = {"HTTPMethod": "POST", "httpHeaders": {"Content-Type": "application/json"},
              "security": {"type": "anonymous"}, "timeout": RPC_TIMEOUT, "tries": TRIES,
              "valueExpression": UPDATE_VALUE}
    rpc = {"methodFilter": ".*", "responseTimeout": RESPONSE_TIMEOUT, "HTTPMethod": "POST",
           "valueExpression": "${params}", "timeout": RPC_TIMEOUT, "tries": TRIES,
           "httpHeaders": {"Content-Type": "application/json"}, "security": {"type": "anonymous"}}
    updates, rpcs = [], []
    for mode in MODES:
        devices = device_prefix(mode) + "-.*"
        # key "fw" goes to the faulty target, key "ok" of the same device to the good one
        updates.append({**update, "deviceNameFilter": devices, "attributeFilter": "fw",
                        "requestUrlExpression": bad.url(mode) + "/fw/${deviceName}"})
        updates.append({**update, "deviceNameFilter": devices, "attributeFilter": "ok",
                        "requestUrlExpression": good + "/ok/${deviceName}"})
        rpcs.append({**rpc, "deviceNameFilter": devices,
                     "requestUrlExpression": bad.url(mode) + "/rpc/${deviceName}/${methodName}"})
    updates.append({**update, "deviceNameFilter": "GOOD-.*", "attributeFilter": ".*",
                    "requestUrlExpression": good + "/ok/${deviceName}"})
    rpcs.append({**rpc, "deviceNameFilter": "GOOD-.*", "requestUrlExpression": good + "/echo/${deviceName}"})
    rpcs.append({**rpc, "deviceNameFilter": "TLS-.*", "requestUrlExpression": tls_good + "/echo/${deviceName}"})
    return {"host": "127.0.0.1", "SSL": False,
            "mapping": [{"endpoint": "/data", "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
                         "converter": {"type": "json", "deviceNameExpression": "${dev}",
                                       "deviceTypeExpression": "default", "attributes": [],
                                       "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}}],
            "attributeUpdates": updates, "serverSideRpc": rpcs}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Subscriber, HttpTarget,
                                                                     BadHttpTargets]]:
    broker = Broker(tmp_path_factory.mktemp("broker"))
    broker.start()
    good = HttpTarget(keep_alive=False).start()
    tls_good = HttpTarget(keep_alive=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*write_cert(tmp_path_factory.mktemp("certs"), "target"))
    tls_good.server.socket = context.wrap_socket(tls_good.server.socket, server_side=True)
    tls_good.start()
    bad = BadHttpTargets().start()
    subscriber = Subscriber(broker).start()
    daemon = DaemonProcess(str(tmp_path_factory.mktemp("gw")), broker,
                           rest_config(good.url, bad, f"https://127.0.0.1:{tls_good.port}"))
    try:
        daemon.start()
        assert subscriber.wait_for(lambda m: any(t == "v1/devices/me/rpc/request/1" for t, _, _ in m), 10), \
            daemon.log_text()  # subscribed: the gateway asks for its session limits right after
        yield daemon, subscriber, good, bad
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        subscriber.close()
        bad.close()
        tls_good.close()
        good.close()
        broker.stop()


def replies(subscriber: Subscriber, ids: set[int]) -> dict[int, Any]:
    """The reply ``data`` per request id, for the ids asked (the first reply of each)."""
    found: dict[int, Any] = {}
    for message in subscriber.on("v1/gateway/rpc"):
        if isinstance(message, dict) and message.get("id") in ids and "data" in message:
            found.setdefault(message["id"], message["data"])
    return found


@pytest.mark.parametrize("mode", FAST_MODES)
def test_faulty_target_gets_clean_error_replies_and_others_go_on(env, mode):
    daemon, subscriber, good, bad = env
    base = 1000 * (MODES.index(mode) + 1)
    device, good_device = f"{device_prefix(mode)}-1", f"GOOD-{mode}"
    connections_before = bad.connections(mode)
    bad_ids, good_ids = [base + i for i in range(3)], [base + 100 + i for i in range(3)]

    # an attribute update to the faulty target first: it must not stop the device's later updates
    subscriber.publish("v1/gateway/attributes", {"device": device, "data": {"fw": "1.0"}})
    for bad_id, good_id in zip(bad_ids, good_ids, strict=True):  # faulty and good RPCs interleaved
        subscriber.publish("v1/gateway/rpc", {"device": device, "data": {"id": bad_id, "method": "get",
                                                                         "params": {"n": bad_id}}})
        subscriber.publish("v1/gateway/rpc", {"device": good_device, "data": {"id": good_id, "method": "get",
                                                                              "params": {"n": good_id}}})
    subscriber.publish("v1/gateway/attributes", {"device": device, "data": {"fw": "2.0", "ok": "after"}})

    wanted = set(bad_ids) | set(good_ids)
    assert subscriber.wait_for(lambda _m: len(replies(subscriber, wanted)) == len(wanted), 30), \
        f"replies missing: {sorted(wanted - set(replies(subscriber, wanted)))}\n{daemon.log_text()[-3000:]}"
    got = replies(subscriber, wanted)
    errors = [got[i] for i in sorted(wanted) if "error" in got[i]]
    print(f"downlink: relayed={len(wanted)} replied={len(got)} errors={len(errors)}")
    assert len(got) == len(wanted)

    # the faulty target's RPCs: one clean error reply each, the shape of a refused connection
    for request_id in bad_ids:
        answer = got[request_id]
        assert set(answer) == {"error", "code"}, answer
        assert answer == {"error": REASONS[mode].format(host=f"127.0.0.1:{bad.ports[mode]}"), "code": 503}
    # the good device answered all along
    assert [got[i] for i in good_ids] == [{"result": {"n": i}} for i in good_ids]
    # the later update of the same device went on: "ok" reached the good target after "fw" failed
    (later,) = good.wait_count(f"/ok/{device}", 1)
    assert later.json() == {"deviceName": device, "ok": "after"}
    # every RPC and both fw updates were tried against the faulty target, with their tries
    assert bad.wait_connections(mode, connections_before + TRIES * (len(bad_ids) + 2))
    assert daemon.proc is not None and daemon.proc.poll() is None
    health = requests.get(daemon.url("/health"), timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_dripping_target_is_cut_at_the_response_timeout(env):
    """Header lines trickle in faster than the read timeout: responseTimeout still bounds the RPC."""
    daemon, subscriber, _, bad = env
    device = f"{device_prefix('drip')}-1"
    ids = {8000, 8001}
    for request_id in sorted(ids):
        subscriber.publish("v1/gateway/rpc", {"device": device, "data": {"id": request_id, "method": "get",
                                                                         "params": {}}})
    subscriber.publish("v1/gateway/rpc", {"device": "GOOD-drip", "data": {"id": 8100, "method": "get",
                                                                        "params": {"n": 8100}}})
    # without a deadline for the whole exchange each try would last 100 header lines (30 s)
    assert subscriber.wait_for(lambda _m: len(replies(subscriber, ids | {8100})) == 3, 4 * RESPONSE_TIMEOUT), \
        f"replies: {replies(subscriber, ids | {8100})}\n{daemon.log_text()[-3000:]}"
    got = replies(subscriber, ids | {8100})
    errors = [data for data in got.values() if "error" in data]
    print(f"downlink: relayed=3 replied={len(got)} errors={len(errors)}")
    assert [got[i] for i in sorted(ids)] == [{"error": "timeout", "code": 408}] * 2
    assert got[8100] == {"result": {"n": 8100}}
    assert bad.connections("drip") >= 2 and daemon.proc is not None and daemon.proc.poll() is None


def test_attribute_update_to_a_dripping_target_fails_within_its_tries(env):
    """No responseTimeout here: each try of the update is bounded by its ``timeout`` in all."""
    daemon, subscriber, good, bad = env
    device = f"{device_prefix('drip')}-3"
    connections_before = bad.connections("drip")
    started = time.monotonic()
    subscriber.publish("v1/gateway/attributes", {"device": device, "data": {"fw": "3.0"}})
    subscriber.publish("v1/gateway/attributes", {"device": device, "data": {"ok": "after-drip"}})
    # the later update of the same device waits for the dripping one: TRIES x RPC_TIMEOUT + a backoff
    # (~1.1 s); were a try bounded per read only, each would last the target's 100 header lines (30 s)
    (later,) = good.wait_count(f"/ok/{device}", 1, timeout=10)
    elapsed = time.monotonic() - started
    assert later.json() == {"deviceName": device, "ok": "after-drip"}
    assert elapsed >= TRIES * RPC_TIMEOUT * 0.9, elapsed  # it did wait for the tries, not skip them
    assert bad.wait_connections("drip", connections_before + TRIES)
    assert f"attribute fw of device {device} not relayed" in daemon.log_text()
    assert f"after {TRIES} tries: timeout" in daemon.log_text()


def test_https_target_answers_within_the_response_timeout(env):
    """The deadline watchdog sits on TLS connections too (SSLVerify is off by default)."""
    _, subscriber, _, _ = env
    subscriber.publish("v1/gateway/rpc", {"device": "TLS-1", "data": {"id": 8200, "method": "get",
                                                                     "params": {"tls": True}}})
    assert subscriber.wait_for(lambda _m: 8200 in replies(subscriber, {8200}), 10)
    print("downlink: relayed=1 replied=1 errors=0")
    assert replies(subscriber, {8200})[8200] == {"result": {"tls": True}}


def test_good_device_still_answers_after_every_fault(env):
    daemon, subscriber, _, bad = env
    for mode in MODES:
        subscriber.publish("v1/gateway/rpc", {"device": f"{device_prefix(mode)}-2",
                                              "data": {"id": 9000 + MODES.index(mode), "method": "get",
                                                       "params": {}}})
    subscriber.publish("v1/gateway/rpc", {"device": "GOOD-after", "data": {"id": 9100, "method": "get",
                                                                         "params": {"last": True}}})
    wanted = {9000 + i for i in range(len(MODES))} | {9100}
    assert subscriber.wait_for(lambda _m: len(replies(subscriber, wanted)) == len(wanted), 30)
    got = replies(subscriber, wanted)
    errors = [data for data in got.values() if "error" in data]
    print(f"downlink: relayed={len(wanted)} replied={len(got)} errors={len(errors)}")
    assert got[9100] == {"result": {"last": True}}
    assert len(errors) == len(MODES)
    assert bad is not None and daemon.proc is not None and daemon.proc.poll() is None
