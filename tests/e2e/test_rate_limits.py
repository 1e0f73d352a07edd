"""Rate limits against the real daemon: 429 + Retry-After + JSON, and nothing refused ever reaches ThingsBoard."""
from __future__ import annotations

import http.client
import json
import ssl
import time

import requests
from aiocoap.numbers.codes import Code

from tests.e2e.test_uplink import wait_until
from tests.fixtures.certs import write_cert
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port

CONVERTER = {"type": "json", "deviceNameExpression": "${dev}", "deviceTypeExpression": "meter",
             "attributes": [], "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}


def mapping(endpoint: str, limit: dict | None) -> dict:
    entry = {"endpoint": endpoint, "HTTPMethod": ["POST"], "security": {"type": "anonymous"}, "converter": CONVERTER}
    if limit is not None:
        entry["rateLimit"] = limit
    return entry


def post_from(port: int, path: str, body: object, source: str = "127.0.0.1",
              tls: ssl.SSLContext | None = None) -> tuple[int, dict, dict]:
    """POST from a chosen loopback source address (the gateway sees it as the client)."""
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=5, source_address=(source, 0), context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), json.loads(answer.read())
    finally:
        conn.close()


def assert_429(status: int, headers: dict, body: dict, fragment: str) -> None:
    assert status == 429, body
    assert int(headers["Retry-After"]) >= 1 and headers["Retry-After"].isdigit()
    assert body["status"] == 429 and body["retryAfter"] == int(headers["Retry-After"])
    assert fragment in body["error"] and "nothing was stored" in body["error"], body


def seqs(subscriber) -> list[int]:
    return sorted(entry["values"]["seq"] for body in subscriber.on("v1/gateway/telemetry") if isinstance(body, dict)
                  for entries in body.values() for entry in entries)


def test_endpoint_client_and_device_limits(make_daemon, mqtt_subscriber):
    rest = {"host": "127.0.0.1", "port": "0", "mapping": [
        mapping("/by-endpoint", {"requests": 1, "perSeconds": 60, "burst": 2}),
        mapping("/by-client", {"requests": 1, "perSeconds": 60, "burst": 1, "by": "client"}),
        mapping("/by-device", {"requests": 1, "perSeconds": 60, "burst": 2, "by": "device"}),
        mapping("/free", None)]}
    gw = make_daemon(rest)
    stored = []
    # by endpoint: two (the burst), then 429 for everyone
    for seq in (1, 2):
        assert post_from(gw.port, "/by-endpoint", {"dev": "e", "seq": seq})[0] == 200
        stored.append(seq)
    assert_429(*post_from(gw.port, "/by-endpoint", {"dev": "e", "seq": 3}), "rate limit of /by-endpoint")
    assert_429(*post_from(gw.port, "/by-endpoint", {"dev": "e", "seq": 4}, "127.0.0.2"), "/by-endpoint")
    # by client: each source address has its own bucket
    assert post_from(gw.port, "/by-client", {"dev": "c", "seq": 10})[0] == 200
    assert_429(*post_from(gw.port, "/by-client", {"dev": "c", "seq": 11}), "for client 127.0.0.1")
    assert post_from(gw.port, "/by-client", {"dev": "c", "seq": 12}, "127.0.0.2")[0] == 200
    stored += [10, 12]
    # by device: the converted name; a request for several devices is refused whole if one is over
    for seq in (20, 21):
        assert post_from(gw.port, "/by-device", {"dev": "d1", "seq": seq})[0] == 200
    assert_429(*post_from(gw.port, "/by-device", {"dev": "d1", "seq": 22}), "for this device")
    assert_429(*post_from(gw.port, "/by-device", [{"dev": "d2", "seq": 23}, {"dev": "d1", "seq": 24}]),
               "for this device")
    assert post_from(gw.port, "/by-device", [{"dev": "d2", "seq": 25}, {"dev": "d3", "seq": 26}])[0] == 200
    assert post_from(gw.port, "/by-device", {"dev": "d2", "seq": 27})[0] == 200  # 23 took no token from d2
    stored += [20, 21, 25, 26, 27]
    assert post_from(gw.port, "/free", {"dev": "f", "seq": 99})[0] == 200
    stored.append(99)
    wait_until(mqtt_subscriber, lambda: 99 in seqs(mqtt_subscriber), timeout=10)
    time.sleep(0.3)  # a refused request stored by mistake would be published with the others
    assert seqs(mqtt_subscriber) == sorted(stored)


def test_global_storage_limit_across_endpoints(make_daemon, mqtt_subscriber):
    rest = {"host": "127.0.0.1", "port": "0", "mapping": [mapping("/a", None), mapping("/b", None)]}
    storage = {"type": "sqlite", "data_file_path": "./data/gateway.db",
               "rateLimit": {"requests": 1, "perSeconds": 1, "burst": 2}}
    gw = make_daemon(rest, storage=storage)
    assert requests.post(gw.url("/a"), json={"dev": "g", "seq": 1}, timeout=5).status_code == 200
    assert requests.post(gw.url("/b"), json={"dev": "g", "seq": 2}, timeout=5).status_code == 200
    refused = requests.post(gw.url("/a"), json={"dev": "g", "seq": 3}, timeout=5)
    assert_429(refused.status_code, refused.headers, refused.json(), "storage.rateLimit")
    time.sleep(int(refused.headers["Retry-After"]) + 0.05)  # then a token is back, as promised
    assert requests.post(gw.url("/b"), json={"dev": "g", "seq": 4}, timeout=5).status_code == 200
    wait_until(mqtt_subscriber, lambda: 4 in seqs(mqtt_subscriber), timeout=10)
    time.sleep(0.3)
    assert seqs(mqtt_subscriber) == [1, 2, 4]


def test_global_storage_limit_counts_each_coap_post_even_when_stored_together(make_daemon, mqtt_subscriber):
    """CoAP posts are stored in batches (one commit for many); each still takes one token, as one HTTP
    request does, and only the posts past the limit are refused: 5.03 with Max-Age, as the device API
    answers storage's refusals, never delivered. Every 2.01 is delivered."""
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": "GLOBAL_TOKEN", "deviceName": "global-dev"}])
    storage = {"type": "sqlite", "data_file_path": "./data/gateway.db",
               "rateLimit": {"requests": 1, "perSeconds": 60, "burst": 5}}
    make_daemon(rest, storage=storage)
    clients = [RawClient(port, source=f"127.0.0.{10 + n}") for n in range(4)]
    try:
        sent = []
        for seq in range(20):  # all sent before any is answered: they queue up into batches
            client = clients[seq % 4]
            message = client.build(Code.POST, "api/v1/GLOBAL_TOKEN/telemetry", b'{"seq": %d}' % seq)
            client.send(message)
            sent.append((client, message, seq))
        answers = {seq: client.response(message.token, 15) for client, message, seq in sent}
    finally:
        for client in clients:
            client.close()
    acked = sorted(seq for seq, answer in answers.items() if answer.code == Code.CREATED)
    refused = [answer for answer in answers.values() if answer.code != Code.CREATED]
    assert len(acked) == 5 and len(refused) == 15
    for answer in refused:
        assert answer.code == Code.SERVICE_UNAVAILABLE and b"storage.rateLimit" in answer.payload
        assert 1 <= answer.opt.max_age <= 60
    wait_until(mqtt_subscriber, lambda: sorted(e["values"]["seq"] for e in mqtt_subscriber.telemetry_for("global-dev"))
               == acked, timeout=15)
    time.sleep(0.5)  # a refused post stored by mistake would be published with the others
    assert sorted(e["values"]["seq"] for e in mqtt_subscriber.telemetry_for("global-dev")) == acked


def test_by_client_sees_the_real_address_through_the_tls_front(make_daemon, mqtt_subscriber, tmp_path):
    cert, key = write_cert(tmp_path, "gateway")
    rest = {"server": {"host": "127.0.0.1", "port": 0, "SSL": True, "security": {"cert": cert, "key": key}},
            "mapping": [dict(mapping("/by-client", {"requests": 1, "perSeconds": 60, "burst": 1, "by": "client"}),
                             HTTPMethods=["POST"])]}
    gw = make_daemon(rest, start=False)
    gw.start(scheme="https", verify=cert)
    tls = ssl.create_default_context(cafile=cert)
    assert post_from(gw.port, "/by-client", {"dev": "t", "seq": 1}, tls=tls)[0] == 200
    assert_429(*post_from(gw.port, "/by-client", {"dev": "t", "seq": 2}, tls=tls), "for client 127.0.0.1")
    # another client: its own bucket, although waitress sees every HTTPS connection from 127.0.0.1
    assert post_from(gw.port, "/by-client", {"dev": "t", "seq": 3}, "127.0.0.2", tls=tls)[0] == 200
    assert_429(*post_from(gw.port, "/by-client", {"dev": "t", "seq": 4}, "127.0.0.2", tls=tls),
               "for client 127.0.0.2")
    wait_until(mqtt_subscriber, lambda: 3 in seqs(mqtt_subscriber), timeout=10)
    time.sleep(0.3)
    assert seqs(mqtt_subscriber) == [1, 3]
