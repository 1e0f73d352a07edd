"""Generated CoAP datagrams over real UDP against the daemon process: it never dies, never answers 5.00,
keeps answering a ping after every datagram, and stores only what it acknowledged with 2.01."""
from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from hypothesis import given

from tests.fixtures.coap import RawClient, coap_rest, free_udp_port, quiet_message
from tests.fuzz.coap_inputs import DATAGRAMS, MARK, TOKEN
from tests.fuzz.support import Outcomes, fuzz_settings

DEVICE = "Fuzzed CoAP device"


@pytest.fixture
def fuzz_gateway(make_daemon, tmp_path):
    (tmp_path / "firmware" / "T" / "1").mkdir(parents=True)
    (tmp_path / "firmware" / "T" / "1" / "p.bin").write_bytes(bytes(range(256)) * 20)
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}], maxPayloadBytes=4000)
    rest["deviceApi"].update({"attributeRequestTimeout": 300, "clientRpcTimeout": 300,
                              "firmware": {"path": str(tmp_path / "firmware")},
                              "provisioning": {"provisionDeviceKey": "k", "provisionDeviceSecret": "s"}})
    gw = make_daemon(rest)
    gw.coap_port = port
    yield gw
    assert gw.proc.poll() is None, f"the daemon died:\n{gw.log_text()[-3000:]}"
    assert gw.stop() == 0
    log = gw.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


class Exchange:
    """One socket for the whole run: sends datagrams, pings after each, and files every answer by token."""

    def __init__(self, port: int) -> None:
        self.client = RawClient(port)
        self.answers: dict[bytes, list[Any]] = {}
        self.markers: dict[bytes, int] = {}  # token -> the marker its payload carried
        self.numbers = itertools.count(1)

    def send(self, data: bytes) -> None:
        number = next(self.numbers)
        data = data.replace(MARK, str(number).encode())
        if len(data) >= 4:  # a message ID of its own (aiocoap answers a repeated one from its cache)
            data = data[:2] + self.client.next_mid().to_bytes(2, "big") + data[4:]
        token_length = data[0] & 0x0F if data else 0
        if data and data[0] >> 6 == 1 and token_length <= 8 and len(data) >= 4 + token_length:
            # a token of its own, so every answer is traced to the datagram it answers
            token = number.to_bytes(4, "big")
            data = bytes([data[0] & 0xF0 | 4]) + data[1:4] + token + data[4 + token_length:]
            marker = re.search(rb'"fz(\d+)"', data)
            if marker and _may_store(data):
                self.markers[token] = int(marker.group(1))
        self.client.send_raw(data)
        self.ping()

    def ping(self, timeout: float = 20.0) -> None:
        """A CoAP ping (empty CON): the daemon must answer RST, whatever came before."""
        ping = quiet_message(code=Code.EMPTY, mtype=Type.CON, mid=self.client.next_mid())
        self.client.send(ping)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.client.recv(max(0.01, deadline - time.monotonic()))
            if message is None:
                break
            if message.mtype == Type.RST and message.mid == ping.mid:
                return
            self.answers.setdefault(message.token, []).append(message)
        raise AssertionError(f"no answer to a ping within {timeout} s: the daemon is stuck")

    def drain(self, quiet: float = 1.0) -> None:
        """File answers until none came for ``quiet`` seconds."""
        while (message := self.client.recv(quiet)) is not None:
            self.answers.setdefault(message.token, []).append(message)

    def acknowledged_markers(self) -> set[int]:
        return {marker for token, marker in self.markers.items()
                if any(a.code == Code.CREATED for a in self.answers.get(token, []))}


def _may_store(data: bytes) -> bool:
    """Whether a 2.01 to ``data`` means stored data: a post to telemetry or attributes. A 2.01 to a claim or
    an RPC reply carries the marker in a payload that is never telemetry (claim publishes only its secret
    and duration), so its marker is not expected on the subscriber. A datagram aiocoap cannot decode counts
    (the daemon must then not answer it 2.01 unless it stored it)."""
    try:
        path = Message.decode(data).opt.uri_path
    except Exception:  # noqa: BLE001 - any decoding failure: keep the marker, the stricter check
        return True
    return bool(path) and path[-1] in ("telemetry", "attributes")


def test_generated_datagrams(fuzz_gateway, mqtt_subscriber) -> None:
    exchange = Exchange(fuzz_gateway.coap_port)
    outcomes = Outcomes("CoAP datagrams (generated, daemon)")

    @fuzz_settings(ci_examples=1000)
    @given(DATAGRAMS)
    def one(data: bytes) -> None:
        exchange.send(data)

    try:
        one()
        for resource in ("telemetry", "attributes"):  # still serving; these arrive last
            final = exchange.client.build(Code.POST, f"api/v1/{TOKEN}/{resource}", b'{"fz0": 1}')
            exchange.client.send(final)
            exchange.drain()
            assert any(a.code == Code.CREATED for a in exchange.answers.get(final.token, [])), resource
    finally:
        for answers in exchange.answers.values():
            for answer in answers:
                outcomes.add(str(answer.code).split(" ")[0] if answer.code != Code.EMPTY else "empty")
        outcomes.write()
        exchange.client.close()
    every = [a for answers in exchange.answers.values() for a in answers]
    assert not [a for a in every if a.code == Code.INTERNAL_SERVER_ERROR], "an internal error was answered"
    acknowledged = exchange.acknowledged_markers() | {0}

    def markers(topic: str) -> list[int]:
        found = []
        for body in mqtt_subscriber.on(topic):
            for entry in body.get(DEVICE, []) if topic.endswith("telemetry") else [body.get(DEVICE, {})]:
                values = entry.get("values", {}) if topic.endswith("telemetry") else entry
                found += [int(key[2:]) for key in values if re.fullmatch(r"fz\d+", key)]
        return found

    for topic in ("v1/gateway/telemetry", "v1/gateway/attributes"):
        assert mqtt_subscriber.wait_for(lambda _m, t=topic: 0 in markers(t), 30), topic
    stored = set(markers("v1/gateway/telemetry")) | set(markers("v1/gateway/attributes"))
    print(f"datagrams={next(exchange.numbers) - 1} acknowledged={len(acknowledged) - 1} stored={len(stored) - 1} "
          f"answers={dict(outcomes.counts)}")
    # nothing stored that was not acknowledged, and everything acknowledged arrived
    assert stored <= acknowledged, sorted(stored - acknowledged)
    assert acknowledged <= stored, sorted(acknowledged - stored)
    assert all(set(body) == {DEVICE} for topic in ("v1/gateway/telemetry", "v1/gateway/attributes")
               for body in mqtt_subscriber.on(topic))
