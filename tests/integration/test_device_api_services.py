"""Device API services with no gateway-API twin: provisioning (durable), firmware, claim, client-side RPC,
and attribute requests, against a real in-process gateway and a real broker playing ThingsBoard."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from tests.integration.test_device_api_http import DEVICE, TOKEN, _wait, gateways, wait_for_topic

_gateway_fixture = pytest.fixture(name="make_gateway")(gateways)

KEY, SECRET = "u7piawkboq8v32dmcmpp", "jpmwdn8ptlswmf4m29bw"
PROVISIONING = {"devices": [{"accessToken": TOKEN, "deviceName": DEVICE}],
                "provisioning": {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET,
                                 "deviceType": "provisioned-type"}}


def provision(gw, **body) -> requests.Response:
    return requests.post(gw.url("/provision"), json=body, timeout=5)


def test_provisioning_outcomes_and_the_token_survives_a_restart(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway(PROVISIONING)
    ok = provision(gw, deviceName="New 1", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET)
    assert ok.status_code == 200
    body = ok.json()
    token = body.pop("credentialsValue")
    assert body == {"credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"} and len(token) == 20
    asked = provision(gw, deviceName="New 2", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET,
                      token="my-own-token")
    assert asked.json()["credentialsValue"] == "my-own-token"
    assert provision(gw, deviceName="New 3", provisionDeviceKey=KEY, provisionDeviceSecret="wrong").json() == \
        {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
    failure = {"errorMsg": "Failed to provision device!", "status": "FAILURE"}
    assert provision(gw, deviceName="New 1", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET).json() == failure
    assert provision(gw, deviceName=DEVICE, provisionDeviceKey=KEY, provisionDeviceSecret=SECRET).json() == failure
    assert provision(gw, deviceName="X", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET,
                     token="my-own-token").json() == failure
    assert provision(gw, deviceName="  ", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET).json() == failure
    assert provision(gw, deviceName="New 4", provisionDeviceKey=KEY).status_code == 400
    assert requests.post(gw.url("/provision"), data="{bad", timeout=5).status_code == 400

    gw.stop()
    gw.start()
    answer = requests.post(gw.url(f"/{token}/telemetry"), json={"temperature": 1}, timeout=5)
    assert answer.status_code == 200
    assert requests.post(gw.url("/my-own-token/attributes"), json={"a": 1}, timeout=5).status_code == 200
    wait_for_topic(mqtt_subscriber, "v1/gateway/telemetry")
    assert mqtt_subscriber.telemetry_for("New 1")[0]["values"] == {"temperature": 1}
    assert {"device": "New 1", "type": "provisioned-type"} in mqtt_subscriber.connects()
    registry = (gw.folder / "data" / "device-api.db").read_bytes()
    assert token.encode() not in registry and b"my-own-token" not in registry  # digests only
    assert provision(gw, deviceName="New 1", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET).json() == failure


def test_provisioning_without_a_profile_is_not_found(make_gateway) -> None:
    gw = make_gateway()
    assert provision(gw, deviceName="N", provisionDeviceKey=KEY, provisionDeviceSecret=SECRET).json()["status"] \
        == "NOT_FOUND"


def test_firmware_whole_chunked_and_missing(make_gateway, tmp_path: Path) -> None:
    package = tmp_path / "firmware" / "TEST_FW" / "1.1"
    package.mkdir(parents=True)
    content = bytes(range(256)) * 40  # 10240 bytes
    (package / "fw.bin").write_bytes(content)
    gw = make_gateway({"devices": [{"accessToken": TOKEN, "deviceName": DEVICE}],
                       "firmware": {"path": str(tmp_path / "firmware")}})
    whole = requests.get(gw.url(f"/{TOKEN}/firmware?title=TEST_FW&version=1.1"), timeout=5)
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["Content-Disposition"] == "attachment;filename=fw.bin"
    assert whole.headers["x-filename"] == "fw.bin"
    chunk = requests.get(gw.url(f"/{TOKEN}/software?title=TEST_FW&version=1.1&size=4096&chunk=2"), timeout=5)
    assert chunk.content == content[8192:12288] and len(chunk.content) == 2048
    past = requests.get(gw.url(f"/{TOKEN}/firmware?title=TEST_FW&version=1.1&size=4096&chunk=9"), timeout=5)
    assert (past.status_code, past.content) == (200, b"")
    assert requests.get(gw.url(f"/{TOKEN}/firmware?title=TEST_FW&version=9"), timeout=5).status_code == 404
    assert requests.get(gw.url(f"/{TOKEN}/firmware?title=..&version=1.1"), timeout=5).status_code == 404
    assert requests.get(gw.url(f"/{TOKEN}/firmware?title=TEST_FW"), timeout=5).status_code == 400
    assert requests.get(gw.url(f"/{TOKEN}/firmware?title=TEST_FW&version=1.1&size=x"), timeout=5).status_code == 400


def test_claim_reaches_thingsboard(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    answer = requests.post(gw.url(f"/{TOKEN}/claim"), json={"secretKey": "value", "durationMs": 60000}, timeout=5)
    assert (answer.status_code, answer.content) == (200, b"")
    assert requests.post(gw.url(f"/{TOKEN}/claim"), timeout=5).status_code == 200
    assert requests.post(gw.url(f"/{TOKEN}/claim"), json={"durationMs": "x"}, timeout=5).status_code == 400
    claims = wait_for_topic(mqtt_subscriber, "v1/gateway/claim", 2)
    assert claims == [{DEVICE: {"secretKey": "value", "durationMs": 60000}},
                      {DEVICE: {"secretKey": "", "durationMs": 0}}]


def answer_own_rpc(subscriber, reply: dict, method: str) -> threading.Thread:
    """Play ThingsBoard's rule chain: answer the gateway's client-side RPC ``method``."""
    def run() -> None:
        found: list[str] = []

        def asked(messages) -> bool:
            found[:] = [t for t, body, _ in messages if t.startswith("v1/devices/me/rpc/request/")
                        and isinstance(body, dict) and body.get("method") == method]
            return bool(found)

        if subscriber.wait_for(asked, 10):
            subscriber.publish("v1/devices/me/rpc/response/" + found[0].rsplit("/", 1)[1], reply)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_client_side_rpc_round_trip_and_timeout(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway({"devices": [{"accessToken": TOKEN, "deviceName": DEVICE}], "clientRpcTimeout": 500})
    helper = answer_own_rpc(mqtt_subscriber, {"time": "2016 11 21 12:54:44.287"}, "getCurrentTime")
    answer = requests.post(gw.url(f"/{TOKEN}/rpc"), json={"method": "getCurrentTime", "params": {"tz": 1}},
                           timeout=10)
    helper.join(10)
    assert answer.status_code == 200 and answer.json() == {"time": "2016 11 21 12:54:44.287"}
    (request,) = [body for topic, body, _ in mqtt_subscriber.messages
                  if topic.startswith("v1/devices/me/rpc/request/") and body["method"] == "getCurrentTime"]
    assert request == {"method": "getCurrentTime", "params": {"device": DEVICE, "params": {"tz": 1}}}
    silent = requests.post(gw.url(f"/{TOKEN}/rpc"), json={"method": "nobodyAnswers"}, timeout=10)
    assert silent.status_code == 200 and silent.json() == {"error": "timeout"}
    assert requests.post(gw.url(f"/{TOKEN}/rpc"), json={"params": 1}, timeout=5).status_code == 400


def answer_attribute_requests(subscriber, values: dict[bool, dict]) -> threading.Thread:
    """Play ThingsBoard: answer attribute requests from ``values`` (client flag → attributes)."""
    def run() -> None:
        answered: set[int] = set()
        pending: list[dict] = []

        def asked(messages) -> bool:
            pending[:] = [b for t, b, _ in messages if t == "v1/gateway/attributes/request"
                          and b["id"] not in answered]
            return bool(pending)

        for _ in range(2):
            if not subscriber.wait_for(asked, 10):
                return
            request = pending[0]
            answered.add(request["id"])
            found = {k: v for k, v in values[request["client"]].items() if k in request["keys"]}
            reply = {"id": request["id"], "device": request["device"]}
            if len(request["keys"]) == 1:
                reply.update({"value": found[request["keys"][0]]} if found else {})
            else:
                reply["values"] = found
            subscriber.publish("v1/gateway/attributes/response", reply)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_attribute_request_both_scopes(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway()
    assert _wait(lambda: gw.daemon.northbound.connected)
    helper = answer_attribute_requests(mqtt_subscriber, {
        True: {"attribute1": "value1", "attribute2": True}, False: {"shared1": 5}})
    answer = requests.get(gw.url(f"/{TOKEN}/attributes?clientKeys=attribute1,attribute2&sharedKeys=shared1,shared2"),
                          timeout=15)
    helper.join(15)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"client": {"attribute1": "value1", "attribute2": True}, "shared": {"shared1": 5}}
    requests_sent = mqtt_subscriber.on("v1/gateway/attributes/request")
    assert [(r["device"], r["client"], r["keys"]) for r in requests_sent] == [
        (DEVICE, True, ["attribute1", "attribute2"]), (DEVICE, False, ["shared1", "shared2"])]
    assert requests.get(gw.url(f"/{TOKEN}/attributes"), timeout=5).status_code == 400


def test_attribute_request_timeout_is_504(make_gateway, mqtt_subscriber) -> None:
    gw = make_gateway({"devices": [{"accessToken": TOKEN, "deviceName": DEVICE}], "attributeRequestTimeout": 300})
    assert _wait(lambda: gw.daemon.northbound.connected)
    answer = requests.get(gw.url(f"/{TOKEN}/attributes?sharedKeys=s"), timeout=10)
    assert answer.status_code == 504
