"""``responseExpected`` at scale against the daemon process: 200 requests of 50 devices wait at once
(``maxWaitingResponses: 200``) while a plain endpoint and the device API keep answering; a stand-in rule
chain then answers every device with its own values and each request gets one of its own device's;
the 201st request is refused with 503 and stores nothing. The daemon's threads and RSS per waiting
request are printed (the figure in connectors/rest/README.md). Each allowed wait is one more server
thread: a process that may not start them all says so and exits instead of dying on a traceback."""
from __future__ import annotations

import json
import random
import resource
import selectors
import socket
import time

import psutil
import pytest
import requests

from tests.e2e.test_operations import scrape, value, wait_for
from tests.e2e.test_rest_response import _asks

DEVICES = [f"waiter-{i:02d}" for i in range(50)]
PER_DEVICE = 4  # several requests of one device wait for the same attribute: each update answers one
WAITING = len(DEVICES) * PER_DEVICE
TOKEN = "SCALE_API_TOKEN_1"
CONVERTER = {"type": "json", "deviceNameExpression": "${name}",
             "timeseries": [{"type": "double", "key": "t", "value": "${t}"}]}
REST = {"host": "127.0.0.1", "maxWaitingResponses": WAITING, "mapping": [
    {"endpoint": "/ask", "converter": CONVERTER,
     "response": {"responseExpected": True, "responseAttribute": "reply", "timeout": 60}},
    {"endpoint": "/plain", "converter": CONVERTER}],
    "deviceApi": {"devices": [{"accessToken": TOKEN, "deviceName": "api-device"}]}}


class RawRequests:
    """HTTP/1.1 requests on raw sockets, one connection each, all sent before any answer is read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: dict[socket.socket, bytes] = {}  # socket -> what it received so far
        self.sent: dict[socket.socket, dict] = {}

    def post(self, path: str, body: dict) -> None:
        payload = json.dumps(body).encode()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (path.encode(), len(payload), payload))
        sock.setblocking(False)
        self.sockets[sock], self.sent[sock] = b"", body

    def answered(self) -> int:
        """How many connections have received anything (an answer or a close) yet."""
        with selectors.DefaultSelector() as selector:
            for sock in self.sockets:
                selector.register(sock, selectors.EVENT_READ)
            return len(selector.select(0))

    def collect(self, timeout: float) -> list[tuple[dict, int, dict]]:
        """(request body, status, JSON answer) of every request, once each connection is closed."""
        done: list[tuple[dict, int, dict]] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for sock in self.sockets:
                selector.register(sock, selectors.EVENT_READ)
            while selector.get_map() and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    sock = key.fileobj
                    chunk = sock.recv(65536)
                    if chunk:
                        self.sockets[sock] += chunk
                        continue
                    selector.unregister(sock)
                    head, _, body = self.sockets[sock].partition(b"\r\n\r\n")
                    done.append((self.sent[sock], int(head.split()[1]), json.loads(body)))
        return done

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def gateway(make_daemon):
    return make_daemon(REST)


def test_two_hundred_requests_wait_at_once_and_each_gets_its_own_devices_answer(gateway, mqtt_subscriber) -> None:
    labels = {"connector": "REST Connector"}
    process = psutil.Process(gateway.proc.pid)
    threads_idle, rss_idle = process.num_threads(), process.memory_info().rss
    waiting = RawRequests(gateway.port)
    try:
        for seq in range(PER_DEVICE):
            for device in DEVICES:
                waiting.post("/ask", {"name": device, "t": seq})
        # every request is registered as waiting, and ThingsBoard has been asked for every device
        samples = wait_for(lambda: (s := scrape(gateway)) and value(s, "rest_gateway_response_waits", **labels)
                           == WAITING and s, 30)
        assert samples, scrape(gateway)
        assert mqtt_subscriber.wait_for(lambda m: set(_asks(m)) == set(DEVICES), 15)
        threads_waiting, rss_waiting = process.num_threads(), process.memory_info().rss

        # while they all wait, other requests are answered: a plain endpoint and the device API
        for n in range(10):
            plain = requests.post(gateway.url("/plain"), json={"name": "plain-dev", "t": n}, timeout=10)
            assert (plain.status_code, plain.json()) == (200, {"stored": 1})
            api = requests.post(gateway.url(f"/api/v1/{TOKEN}/telemetry"), json={"n": n}, timeout=10)
            assert api.status_code == 200
        # one more past the bound: 503 at once with a JSON reason, before anything is stored
        refused = requests.post(gateway.url("/ask"), json={"name": "one-too-many", "t": 1}, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["status"] == 503
        assert f"maxWaitingResponses {WAITING}" in refused.json()["error"]
        assert waiting.answered() == 0  # nobody got an answer meanwhile

        # the rule chain answers each device PER_DEVICE times with values naming the device, in random order
        answers = [(device, seq) for device in DEVICES for seq in range(PER_DEVICE)]
        random.Random(16).shuffle(answers)
        for device, seq in answers:
            mqtt_subscriber.publish("v1/gateway/attributes",
                                    {"device": device, "data": {"reply": {"for": device, "seq": seq}}})
        results = waiting.collect(30)
    finally:
        waiting.close()

    assert len(results) == WAITING
    got: dict[str, list[int]] = {device: [] for device in DEVICES}
    for sent, status, answer in results:
        assert status == 200, (sent, status, answer)
        assert answer["for"] == sent["name"]  # never another device's value
        got[sent["name"]].append(answer["seq"])
    assert all(sorted(seqs) == list(range(PER_DEVICE)) for seqs in got.values()), got  # each value answered one

    # the refused request stored nothing: what was posted after it arrives, it never does
    assert requests.post(gateway.url("/plain"), json={"name": "marker", "t": 1}, timeout=10).status_code == 200
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("marker"), 15)
    assert not mqtt_subscriber.telemetry_for("one-too-many") and "one-too-many" not in _asks(mqtt_subscriber.messages)
    assert sum(len(mqtt_subscriber.telemetry_for(d)) for d in DEVICES) >= len(DEVICES)
    samples = scrape(gateway)
    assert value(samples, "rest_gateway_response_waits", **labels) == 0
    assert value(samples, "rest_gateway_response_waits_limit", **labels) == WAITING
    assert value(samples, "rest_gateway_response_waits_outcomes_total", outcome="answered", **labels) == WAITING
    assert value(samples, "rest_gateway_response_waits_outcomes_total", outcome="refused", **labels) == 1
    print(f"waiting={WAITING} threads_idle={threads_idle} threads_waiting={threads_waiting} "
          f"rss_idle_mb={rss_idle / 2**20:.1f} rss_waiting_mb={rss_waiting / 2**20:.1f} "
          f"per_wait_kb={(rss_waiting - rss_idle) / WAITING / 1024:.1f}")
    assert gateway.stop() == 0


def test_a_process_that_cannot_start_the_threads_of_every_wait_says_so(make_daemon) -> None:
    # 4,096 allowed waits are 4,128 server threads; 4 GiB of address space holds a few hundred 8 MiB stacks
    gw = make_daemon({**REST, "maxWaitingResponses": 4096, "connectionLimit": 5000}, start=False)

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    with pytest.raises(AssertionError, match="daemon exited with 1"):
        gw.start(preexec=limit_address_space)
    log = gw.log_text()
    assert "cannot start: cannot start the HTTP server's 4384 threads" in log, log  # + 256 device API polls
    assert "maxWaitingResponses" in log and "Traceback" not in log
