"""/healthz failure paths in a real in-process gateway (sqlite, northbound, HTTP and CoAP servers, admin
listener) with a real broker: a reporting thread that ends and a sender that stops going round its loop
turn liveness to 503, and the JSON names the failed check.

In-process because the failures are made by ending the gateway's own threads through their public
``stop()`` (which a process from outside cannot do without killing everything) and by cutting the
sender's stall allowance, whose real value (over a minute) no test should wait out.
"""
from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from tests.integration.test_device_api_http import DEVICE, TOKEN, gateways

make_gateway = pytest.fixture(name="make_gateway")(gateways)
CONNECTOR = "connector:REST"


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return udp.getsockname()[1]


def with_coap() -> dict[str, Any]:
    return {"devices": [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "thermometer"}],
            "coap": {"host": "127.0.0.1", "port": udp_port()}}


def healthz(gateway: Any) -> tuple[int, dict[str, Any]]:
    port = gateway.daemon.loaded.gateway.admin.port
    answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    return answer.status_code, answer.json()


def failed(body: dict[str, Any]) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


def test_the_coap_server_reports_in_and_its_end_fails_liveness(make_gateway) -> None:
    gateway = make_gateway(with_coap())
    code, body = healthz(gateway)
    assert code == 200 and body["status"] == "ok", body
    assert {"mqtt_sender", f"{CONNECTOR}:http_server", f"{CONNECTOR}:downlink",
            f"{CONNECTOR}:coap_server"} == set(body["checks"])

    gateway.daemon.connectors[0].coap.stop()  # its event loop thread ends, as it would on a fatal error
    code, body = healthz(gateway)
    assert code == 503 and body["status"] == "fail", body
    assert failed(body) == {f"{CONNECTOR}:coap_server"}


def test_without_coap_there_is_no_coap_check(make_gateway) -> None:
    gateway = make_gateway()
    code, body = healthz(gateway)
    assert code == 200 and f"{CONNECTOR}:coap_server" not in body["checks"], body


def test_a_dead_sender_thread_fails_liveness(make_gateway) -> None:
    gateway = make_gateway()
    assert healthz(gateway)[0] == 200
    gateway.daemon.northbound.stop(timeout=1.0)  # the sender thread ends; the HTTP side keeps serving
    code, body = healthz(gateway)
    assert code == 503 and failed(body) == {"mqtt_sender"}, body


def test_a_stalled_sender_fails_liveness_and_recovers(make_gateway) -> None:
    gateway = make_gateway()
    northbound = gateway.daemon.northbound
    assert healthz(gateway)[0] == 200
    allowance = northbound.stale_after
    # a sender stuck in a call stops updating its heartbeat; with no allowance left, its last round
    # is overdue at once, which is what /healthz sees once a real stall passes the real allowance
    northbound.stale_after = 0.0
    code, body = healthz(gateway)
    assert code == 503 and failed(body) == {"mqtt_sender"}, body
    northbound.stale_after = allowance  # it goes round its loop again: alive
    code, body = healthz(gateway)
    assert code == 200 and body["status"] == "ok", body
