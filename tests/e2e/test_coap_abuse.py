"""UDP abuse of the CoAP device API, end to end (the daemon process, a real broker, raw UDP clients):
a flooding source address is refused with 4.29 while others are served and nothing refused is stored,
and no request without a valid token gets an answer much larger than itself (amplification)."""
from __future__ import annotations

import json
import socket
import time

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.fixtures.coap import RawClient, coap_rest, free_udp_port, quiet_message

TOKEN, DEVICE = "ABUSE_TOKEN", "Abuse Sensor"
KEY, SECRET = "abuse-provision-key", "abuse-provision-secret"
#: docs/device-api.md "UDP abuse": an answer to a request without a valid token is at most this many
#: bytes larger than the request (a Max-Age option: 2 bytes of header, up to 4 of value)
SLACK = 6


def seqs(subscriber) -> list[int]:
    return sorted(entry["values"]["seq"] for entry in subscriber.telemetry_for(DEVICE))


def test_a_flooding_source_gets_4_29_while_another_is_served_and_nothing_refused_is_stored(
        make_daemon, mqtt_subscriber) -> None:
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}],
                     rateLimit={"requests": 1, "perSeconds": 60, "burst": 3, "maxAddresses": 100})
    make_daemon(rest)
    flooder, other = RawClient(port, source="127.0.0.2"), RawClient(port, source="127.0.0.3")
    try:
        answers = []
        for seq in range(12):  # one after the other, each answered: CON with NSTART 1, as a device sends
            answer = flooder.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"seq": %d}' % seq)
            answers.append(answer)
        assert [a.code for a in answers] == [Code.CREATED] * 3 + [Code.TOO_MANY_REQUESTS] * 9
        for refused in answers[3:]:
            assert refused.payload == b"" and refused.opt.max_age == 60  # 1 request per 60 s: a token in 60 s
        attributes = flooder.request(Code.GET, f"api/v1/{TOKEN}/attributes", query=("sharedKeys=a",))
        assert attributes.code == Code.TOO_MANY_REQUESTS  # every request counts, not only posts
        for seq in (100, 101):
            assert other.request(Code.POST, f"api/v1/{TOKEN}/telemetry", b'{"seq": %d}' % seq).code == Code.CREATED
    finally:
        flooder.close()
        other.close()
    assert mqtt_subscriber.wait_for(lambda _m: 101 in seqs(mqtt_subscriber), 15)
    time.sleep(0.5)  # a refused post stored by mistake would be published with the others
    assert seqs(mqtt_subscriber) == [0, 1, 2, 100, 101]


def _exchange(sock: socket.socket, message: Message) -> tuple[bytes, bytes]:
    """(request datagram, answer datagram)."""
    request = bytes(message.encode())
    sock.send(request)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        answer = sock.recv(65535)
        if Message.decode(answer).mid == message.mid:
            return request, answer
    raise AssertionError(f"no answer to {message}")


def _request(mid: int, code: Code, path: str, payload: bytes = b"", **options: object) -> Message:
    message = quiet_message(mtype=Type.CON, code=code, mid=mid, token=b"", payload=payload,
                            uri_path=tuple(p for p in path.split("/") if p))
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message


def test_answers_to_requests_without_a_valid_token_are_never_much_larger_than_the_request(make_daemon) -> None:
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}],
                     rateLimit={"requests": 1, "perSeconds": 3600, "burst": 14})
    rest["deviceApi"]["provisioning"] = {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET}
    make_daemon(rest)
    # each as small as it can be made (no token, no content format): the worst ratio for each answer
    requests = [
        (_request(1, Code.POST, "api/v1/WRONG/telemetry", b"{}"), Code.UNAUTHORIZED),
        (_request(2, Code.GET, "api/v1/WRONG/attributes"), Code.UNAUTHORIZED),
        (_request(3, Code.GET, "fw/WRONG"), Code.UNAUTHORIZED),
        (_request(4, Code.GET, "x"), Code.NOT_FOUND),
        (_request(5, Code.GET, ""), Code.NOT_FOUND),
        (_request(6, Code.GET, "api/v1/provision"), Code.METHOD_NOT_ALLOWED),
        (_request(7, Code.POST, "api/v1/provision"), Code.BAD_REQUEST),  # empty body
        (_request(8, Code.POST, "api/v1/provision", b"x"), Code.BAD_REQUEST),  # not JSON
        (_request(9, Code.POST, "api/v1/provision", b"{}"), Code.BAD_REQUEST),  # keys missing
        (_request(10, Code.POST, "api/v1/provision", b"[]"), Code.BAD_REQUEST),
        (_request(11, Code.POST, "api/v1/provision", b"{}", content_format=60), Code.UNSUPPORTED_CONTENT_FORMAT),
        (_request(12, Code.POST, "api/v1/provision", b"{}", if_none_match=True), Code.BAD_OPTION),
        (_request(13, Code.POST, "api/v1/provision", b"{}", proxy_scheme="coap"), Code.PROXYING_NOT_SUPPORTED),
        # the smallest body that reaches ThingsBoard's NOT_FOUND JSON (lenient JSON, as ThingsBoard reads it)
        (_request(14, Code.POST, "api/v1/provision", b"{provisionDeviceKey:a,provisionDeviceSecret:b}"),
         Code.BAD_REQUEST),
    ]
    sizes = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        for message, code in requests:
            request, answer = _exchange(sock, message)
            decoded = Message.decode(answer)
            assert decoded.code == code, (message.opt.uri_path, decoded.code, decoded.payload)
            sizes.append((len(request), len(answer), str(code), decoded.payload))
        # the 14 above used the address's burst: the smallest request there is gets 4.29 with Max-Age
        request, answer = _exchange(sock, _request(15, Code.GET, ""))
        assert Message.decode(answer).code == Code.TOO_MANY_REQUESTS and Message.decode(answer).opt.max_age == 3600
        sizes.append((len(request), len(answer), "4.29", b""))
    print(json.dumps([s[:3] for s in sizes]))  # the figures behind docs/device-api.md "UDP abuse"
    for request_size, answer_size, code, payload in sizes:
        assert answer_size <= request_size + SLACK, (request_size, answer_size, code, payload)
