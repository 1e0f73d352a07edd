"""Long polls never starve other requests: 200 devices wait on RPC polls while others post telemetry."""
from __future__ import annotations

import threading

import pytest
import requests

from tests.integration.test_device_api_http import TOKEN, _wait, gateways, wait_for_topic

_gateway_fixture = pytest.fixture(name="make_gateway")(gateways)

POLLERS = 200


def test_200_concurrent_polls_while_other_devices_post_telemetry(make_gateway, mqtt_subscriber) -> None:
    devices = [{"accessToken": f"poll-{i}", "deviceName": f"Poller {i}"} for i in range(POLLERS)]
    devices += [{"accessToken": f"post-{i}", "deviceName": f"Poster {i}"} for i in range(10)]
    gw = make_gateway({"devices": devices})
    results: dict[int, requests.Response] = {}
    lock = threading.Lock()

    def poll(index: int) -> None:
        answer = requests.get(gw.url(f"/poll-{index}/rpc?timeout=60000"), timeout=90)
        with lock:
            results[index] = answer

    pollers = [threading.Thread(target=poll, args=(i,)) for i in range(POLLERS)]
    for thread in pollers:
        thread.start()
    try:
        assert _wait(lambda: gw.health()["polls_waiting"] == POLLERS, 30), gw.health()
        for round_ in range(3):
            for i in range(10):
                answer = requests.post(gw.url(f"/post-{i}/telemetry"), json={"round": round_}, timeout=10)
                assert (answer.status_code, answer.content) == (200, b"")
        # every telemetry request was answered while all 200 polls were still waiting
        assert gw.health()["polls_waiting"] == POLLERS and not results
        wait_for_topic(mqtt_subscriber, "v1/gateway/telemetry")
    finally:
        for i in range(POLLERS):
            mqtt_subscriber.publish("v1/gateway/rpc", {"device": f"Poller {i}",
                                                       "data": {"id": 1000 + i, "method": "wake", "params": i}})
        for thread in pollers:
            thread.join(60)
    assert len(results) == POLLERS
    for i, answer in results.items():
        assert answer.status_code == 200
        assert answer.json() == {"id": 1000 + i, "method": "wake", "params": i}
    assert _wait(lambda: len([e for i in range(10) for e in mqtt_subscriber.telemetry_for(f"Poster {i}")]) == 30)


def test_polls_beyond_the_bound_are_refused_at_once(make_gateway) -> None:
    gw = make_gateway({"devices": [{"accessToken": TOKEN, "deviceName": "D"}], "maxConcurrentPolls": 2})
    answers: list[requests.Response] = []
    waiting = [threading.Thread(target=lambda: answers.append(
        requests.get(gw.url(f"/{TOKEN}/attributes/updates?timeout=3000"), timeout=30))) for _ in range(2)]
    for thread in waiting:
        thread.start()
    assert _wait(lambda: gw.health()["polls_waiting"] == 2)
    refused = requests.get(gw.url(f"/{TOKEN}/rpc?timeout=3000"), timeout=5)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    # other requests are still served: the pool has a thread per allowed poll on top of `threads`
    assert requests.post(gw.url(f"/{TOKEN}/telemetry"), json={"a": 1}, timeout=5).status_code == 200
    for thread in waiting:
        thread.join(30)
    assert [a.status_code for a in answers] == [408, 408]
