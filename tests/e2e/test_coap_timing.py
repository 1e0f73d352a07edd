"""CoAP timing paths at the datagram level, on the daemon process with shortened transmission
parameters (``ackTimeoutSeconds`` 1, ``maxRetransmit`` 1: a CON is sent twice and given up after at
most 4.5 s): an observer that never acknowledges is dropped and its update kept for the next one;
a slow request gets an empty ACK, then a separate confirmable response retransmitted until acknowledged."""
from __future__ import annotations

import threading

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.e2e.test_coap_aiocoap_client import play_client_rpc_server
from tests.e2e.test_coap_libcoap import answer_attribute_requests, wait_until
from tests.e2e.test_coap_observe import metric
from tests.fixtures.coap import (
    coap_rest,
    free_udp_port,
    quiet_message,
    raw_clients,  # noqa: F401 (the clients fixture)
)

TOKEN, DEVICE = "TIMING_TOKEN", "Timing 1"


@pytest.fixture
def gateway(make_daemon):
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE}], ackTimeoutSeconds=1, maxRetransmit=1)
    gw = make_daemon(rest)
    gw.coap_port = port
    return gw


def test_an_observer_that_never_acknowledges_is_dropped_and_the_next_gets_the_update(gateway, clients,
                                                                                   mqtt_subscriber) -> None:
    gone = clients()
    request = gone.build(Code.GET, f"api/v1/{TOKEN}/attributes", observe=0)
    gone.send(request)
    assert gone.response(request.token).payload == b"{}"
    gone.on_confirmable = "none"  # the device is gone: nothing acknowledges what the gateway sends it
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"setpoint": 21}})
    sent = gone.response(request.token)
    assert sent.mtype == Type.CON and sent.payload == b'{"setpoint":21}'
    again = gone.response(request.token)  # the one retransmission maxRetransmit 1 allows: same message ID
    assert again is not None and again.mid == sent.mid and again.payload == sent.payload
    # after it aiocoap gives up and the observation is dropped
    assert wait_until(lambda: metric(gateway, "coap_observations_attributes") == 0)
    assert gone.response(request.token, 1) is None  # nothing more is sent to the gone device
    assert metric(gateway, "coap_observations_dropped_total") == 1

    # the update was not delivered: it is kept, and the next observer's first notification carries it
    back = clients()
    request = back.build(Code.GET, f"api/v1/{TOKEN}/attributes", observe=0)
    back.send(request)
    first = back.response(request.token)
    assert first.code == Code.CONTENT and first.opt.observe == 0 and first.payload == b'{"setpoint":21}'


@pytest.mark.parametrize("kind", ["attribute request", "client-side RPC"])
def test_a_slow_answer_comes_as_an_empty_ack_then_a_separate_confirmable_response(gateway, clients,
                                                                                  mqtt_subscriber, kind) -> None:
    client = clients()
    client.on_confirmable = "none"  # the test acknowledges by hand
    if kind == "attribute request":
        request = client.build(Code.GET, f"api/v1/{TOKEN}/attributes", query=("sharedKeys=shared1,shared2",))
        thingsboard = threading.Thread(target=answer_attribute_requests,
                                       args=(mqtt_subscriber, {False: {"shared1": "value1"}}, 1))
        expected = b'{"shared":{"shared1":"value1"}}'
    else:
        request = client.build(Code.POST, f"api/v1/{TOKEN}/rpc", b'{"method": "getCurrentTime", "params": {}}')
        thingsboard = threading.Thread(target=play_client_rpc_server, args=(mqtt_subscriber, {"time": "12:54"}))
        expected = b'{"time":"12:54"}'
    client.send(request)
    # ThingsBoard has not answered yet (the subscriber answers only once the ACK is here)
    ack = client.recv(10)
    assert ack is not None and (ack.mtype, ack.code, ack.mid, ack.token, ack.payload) == (
        Type.ACK, Code.EMPTY, request.mid, b"", b"")
    thingsboard.start()
    try:
        response = client.recv(15)
        assert response is not None and response.mtype == Type.CON and response.code == Code.CONTENT
        assert response.token == request.token and response.mid != request.mid and response.payload == expected
        again = client.recv(10)  # not acknowledged: retransmitted, same message ID
        assert again is not None and (again.mid, again.payload) == (response.mid, expected)
        client.send(quiet_message(code=Code.EMPTY, mtype=Type.ACK, mid=response.mid))
    finally:
        thingsboard.join(20)
