"""Hostile and broken CoAP against the daemon process: malformed datagrams, unknown paths, huge payloads,
wrong content formats, options it does not understand, Block1 misuse. Each gets an error code or
silence; the daemon keeps answering, and the real subscriber sees nothing that was not acknowledged."""
from __future__ import annotations

import json
import random

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import OpaqueOption, StringOption

from tests.e2e.test_coap_observe import metric
from tests.fixtures.coap import RawClient, coap_rest, free_udp_port

TOKEN, DEVICE = "BAD_INPUT_TOKEN", "Bad Input Sensor"
TELEMETRY = f"api/v1/{TOKEN}/telemetry"
MAX_PAYLOAD = 20_000
#: a datagram too short or of the wrong version is silence; a later one must still be answered
SILENCE_WAIT = 0.5


@pytest.fixture
def gateway(make_daemon):
    port = free_udp_port()
    gw = make_daemon(coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}],
                               maxPayloadBytes=MAX_PAYLOAD))
    gw.coap_port = port
    yield gw
    assert gw.proc.poll() is None, f"the daemon died:\n{gw.log_text()[-3000:]}"
    log = gw.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


@pytest.fixture
def client(gateway):
    raw = RawClient(gateway.coap_port)
    yield raw
    raw.close()


def header(tkl: int = 4, code: int = 0x02, mtype: int = 0, mid: int = 0x1234, version: int = 1) -> bytes:
    return bytes([(version << 6) | (mtype << 4) | tkl, code, mid >> 8, mid & 0xFF])


def uri_path(*segments: bytes) -> bytes:
    """Uri-Path options by hand (option 11; segments shorter than 13 bytes)."""
    out, last = b"", 0
    for segment in segments:
        out += bytes([((11 - last) << 4) | len(segment)]) + segment
        last = 11
    return out


TELEMETRY_PATH = uri_path(b"api", b"v1", TOKEN[:12].encode())  # a wrong (cut) token: never stored anyway
GOOD_PATH = (bytes([0xB3]) + b"api" + bytes([0x02]) + b"v1" + bytes([0x0D, len(TOKEN) - 13]) + TOKEN.encode()
             + bytes([0x09]) + b"telemetry")

MALFORMED = {
    "empty datagram": b"",
    "one byte": b"\x40",
    "truncated header": b"\x40\x02\x12",
    "version 0": header(version=0) + b"abcd" + GOOD_PATH + b'\xff{"v":0}',
    "version 2": header(version=2) + b"abcd" + GOOD_PATH + b'\xff{"v":2}',
    "version 3": header(version=3) + b"abcd" + GOOD_PATH + b'\xff{"v":3}',
    "token length 15": header(tkl=15) + b"x" * 15 + GOOD_PATH + b'\xff{"t":15}',
    "token longer than the datagram": header(tkl=8) + b"123",
    "option delta 15 (reserved)": header() + b"abcd" + b"\xf1x",
    "option length 15 (reserved)": header() + b"abcd" + b"\x1f",
    "option longer than the datagram": header() + b"abcd" + b"\xbdap",
    "extended delta cut off": header() + b"abcd" + b"\xd1",
    "non-UTF-8 Uri-Path": header() + b"abcd" + b"\xb2\xff\xfe" + b'\xff{"u":1}',
    "non-UTF-8 Uri-Query": header() + b"abcd" + GOOD_PATH + b"\x42\xc3\x28" + b'\xff{"q":1}',
    "Block1 option of 4 bytes": header() + b"abcd" + GOOD_PATH + b"\xd4\x03\x01\x02\x03\x04" + b'\xff{"b":1}',
    "Content-Format of 3 bytes": header() + b"abcd" + GOOD_PATH + b"\x13\x01\x02\x03" + b'\xff{"c":1}',
    "payload marker, no payload": header() + b"abcd" + GOOD_PATH + b"\xff",
    "response code in a CON": header(code=0x45) + b"abcd" + GOOD_PATH + b'\xff{"r":1}',
    "empty code with a token": header(code=0) + b"abcd",
    "ACK out of the blue": header(tkl=0, code=0, mtype=2),
    "RST out of the blue": header(tkl=0, code=0, mtype=3),
    "reserved code 0.31": header(code=0x1F) + b"abcd" + GOOD_PATH + b'\xff{"m":31}',
    "cut token path": header() + b"abcd" + TELEMETRY_PATH + b'\xff{"cut":1}',
    "random bytes": random.Random(12).randbytes(64),
    "60 KB of zeros": b"\x00" * 60_000,
}


def collect(client: RawClient) -> Message | None:
    """The answer to a datagram, if any: silence is a correct answer to most of these."""
    try:
        return client.recv(SILENCE_WAIT)
    except Exception:  # noqa: BLE001 - an answer the test client cannot parse is reported
        raise AssertionError("the gateway answered with a datagram that is not CoAP") from None


def assert_still_serving_and_only(client: RawClient, subscriber, stored: list[dict]) -> None:
    """A good post is still answered 2.01 and the subscriber sees ``stored`` plus it, nothing else."""
    answer = client.request(Code.POST, TELEMETRY, b'{"alive": 1}')
    assert answer is not None and answer.code == Code.CREATED
    assert subscriber.wait_for(lambda _m: any(e["values"] == {"alive": 1} for e in subscriber.telemetry_for(DEVICE)),
                               20)
    # per device the gateway delivers in order: anything stored before "alive" has arrived by now
    assert [e["values"] for e in subscriber.telemetry_for(DEVICE)] == [*stored, {"alive": 1}]
    assert all(set(body) == {DEVICE} for body in subscriber.on("v1/gateway/telemetry"))


def test_malformed_datagrams_get_silence_or_an_error_and_store_nothing(gateway, client, mqtt_subscriber) -> None:
    answers = {}
    for name, data in MALFORMED.items():
        if len(data) >= 4:  # a message ID of its own: aiocoap answers a repeated one from its cache
            data = data[:2] + client.next_mid().to_bytes(2, "big") + data[4:]
        client.send_raw(data)
        answer = collect(client)
        answers[name] = None if answer is None else answer.code
        if answer is not None:
            assert answer.code == Code.EMPTY or answer.code.is_response() and not answer.code.is_successful(), (
                name, answer)
    # the ones the daemon can read enough of to answer, it answers with an error (never a 2.xx)
    assert answers["empty datagram"] is None and answers["truncated header"] is None
    assert answers["version 2"] is None and answers["non-UTF-8 Uri-Path"] is None
    assert answers["reserved code 0.31"] == Code.METHOD_NOT_ALLOWED
    assert_still_serving_and_only(client, mqtt_subscriber, [])
    assert metric(gateway, "coap_unparsable_total") >= 8
    # a flood of garbage is counted, not logged line by line (one line a minute)
    assert gateway.log_text().lower().count("ignoring unparsable") == 1


def test_unknown_paths_and_methods(gateway, client, mqtt_subscriber) -> None:
    for path in ("", "api", "api/v1", "api/v2/x/telemetry", "fw", "fw/a/b", ".well-known/core", "a/" * 200 + "b"):
        answer = client.request(Code.POST, path, b'{"p": 1}')
        assert answer.code == Code.NOT_FOUND and answer.payload == b"", path  # nothing for a stranger
    assert client.request(Code.POST, "api/v1/NO_SUCH_TOKEN/telemetry", b'{"p": 1}').code == Code.UNAUTHORIZED
    for resource in ("telemetry/x", "attributes/x", "rpc/1/2", "nothing", "claim/x"):
        answer = client.request(Code.POST, f"api/v1/{TOKEN}/{resource}", b'{"p": 1}')
        assert answer.code == Code.BAD_REQUEST and b"unknown resource" in answer.payload, resource
    for method in (Code.PUT, Code.DELETE, Code.FETCH, Code.PATCH, Code.iPATCH):
        assert client.request(method, TELEMETRY, b'{"p": 1}').code == Code.METHOD_NOT_ALLOWED, method
    assert_still_serving_and_only(client, mqtt_subscriber, [])


def test_huge_payloads(gateway, client, mqtt_subscriber) -> None:
    # larger than aiocoap's 4096-byte receive buffer, within maxPayloadBytes: stored whole, not cut
    value = "x" * 10_000
    assert client.request(Code.POST, TELEMETRY, json.dumps({"big": value}).encode()).code == Code.CREATED
    for size in (MAX_PAYLOAD + 1, 60_000):
        answer = client.request(Code.POST, TELEMETRY, b'{"too": "' + b"y" * size + b'"}')
        assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE and answer.opt.size1 == MAX_PAYLOAD
        assert b"maxPayloadBytes" in answer.payload
    # Block1: the upload is refused at the block that passes the limit, and nothing of it stored
    block, number, answer = b"z" * 1024, 0, None
    while number * 1024 <= MAX_PAYLOAD:
        answer = client.request(Code.POST, TELEMETRY, block, block1=(number, True, 6))
        if answer.code != Code.CONTINUE:
            break
        number += 1
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE and number == MAX_PAYLOAD // 1024
    assert_still_serving_and_only(client, mqtt_subscriber, [{"big": value}])


def test_wrong_content_formats(gateway, client, mqtt_subscriber) -> None:
    for content_format in (42, 60, 110, 11542, 65535):  # octet-stream, CBOR, SenML JSON, LwM2M TLV, reserved
        answer = client.request(Code.POST, TELEMETRY, b'{"cf": 1}', content_format=content_format)
        assert answer.code == Code.UNSUPPORTED_CONTENT_FORMAT and b"JSON" in answer.payload, content_format
        answer = client.request(Code.POST, f"api/v1/{TOKEN}/attributes", b'{"cf": 1}', content_format=content_format)
        assert answer.code == Code.UNSUPPORTED_CONTENT_FORMAT, content_format
    assert client.request(Code.POST, TELEMETRY, b'{"cf": 0}', content_format=0).code == Code.CREATED
    assert client.request(Code.POST, TELEMETRY, b'{"cf": 50}', content_format=50).code == Code.CREATED
    assert_still_serving_and_only(client, mqtt_subscriber, [{"cf": 0}, {"cf": 50}])


def test_options_it_does_not_understand(gateway, client, mqtt_subscriber) -> None:
    for number, value in ((9, b"\x01"), (1, b"etag"), (5, b""), (2049, b"x"), (65001, b"y")):  # all critical (odd)
        message = client.build(Code.POST, TELEMETRY, b'{"crit": %d}' % number)
        message.opt.add_option(OpaqueOption(OptionNumber(number), value))
        client.send(message)
        answer = client.response(message.token)
        assert answer.code == Code.BAD_OPTION and str(number).encode() in answer.payload, number
    proxied = client.build(Code.POST, TELEMETRY, b'{"proxy": 1}')
    proxied.opt.add_option(StringOption(OptionNumber.PROXY_URI, "coap://elsewhere/x"))
    client.send(proxied)
    assert client.response(proxied.token).code == Code.PROXYING_NOT_SUPPORTED
    stranger = client.build(Code.POST, "api/v1/NO_SUCH_TOKEN/telemetry", b"{}")
    stranger.opt.add_option(OpaqueOption(OptionNumber(9), b"\x01"))
    client.send(stranger)
    refused = client.response(stranger.token)
    assert refused.code == Code.UNAUTHORIZED and refused.payload == b""  # no diagnostic to a stranger
    elective = client.build(Code.POST, TELEMETRY, b'{"elective": 1}')  # even numbers may be ignored
    elective.opt.add_option(OpaqueOption(OptionNumber(2048), b"x"))
    client.send(elective)
    assert client.response(elective.token).code == Code.CREATED
    assert_still_serving_and_only(client, mqtt_subscriber, [{"elective": 1}])


def test_block1_misuse(gateway, client, mqtt_subscriber) -> None:
    def post(payload: bytes, number: int, more: bool, szx: int = 0):
        return client.request(Code.POST, TELEMETRY, payload, block1=(number, more, szx))

    body = b'{"blockwise": "' + b"b" * 40 + b'"}'  # 57 bytes: four blocks of 16
    blocks = [body[i:i + 16] for i in range(0, len(body), 16)]
    assert post(blocks[0][:10], 0, True).code == Code.BAD_REQUEST  # a block shorter than its size
    assert post(blocks[0], 0, True, szx=7).code == Code.BAD_REQUEST  # BERT is for TCP
    assert post(blocks[2], 2, False).code == Code.REQUEST_ENTITY_INCOMPLETE  # no block 0 before it
    assert post(blocks[0], 0, True).code == Code.CONTINUE
    assert post(blocks[2], 2, True).code == Code.REQUEST_ENTITY_INCOMPLETE  # a gap
    assert post(blocks[0], 0, True).code == Code.CONTINUE  # start again
    assert post(blocks[1], 1, True).code == Code.CONTINUE
    answer = post(blocks[0], 0, False)  # restarting with a complete short body discards the half upload
    assert answer.code == Code.BAD_REQUEST  # '{"blockwise": "b' alone is not JSON
    overlap = [post(blocks[0], 0, True), post(blocks[1], 1, True), post(blocks[1], 1, True)]
    assert [a.code for a in overlap[:2]] == [Code.CONTINUE, Code.CONTINUE]
    assert overlap[2].code in (Code.REQUEST_ENTITY_INCOMPLETE, Code.CONTINUE)  # a repeat with a new MID
    for number, block in enumerate(blocks):  # finally one proper upload
        answer = post(block, number, number < len(blocks) - 1)
        if number < len(blocks) - 1:
            assert answer.code == Code.CONTINUE, number
    assert answer.code == Code.CREATED
    assert_still_serving_and_only(client, mqtt_subscriber, [{"blockwise": "b" * 40}])
