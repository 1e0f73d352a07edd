"""The spec's curl examples (http-device-api.md), replayed verbatim with curl against the daemon process;
a real broker plays ThingsBoard. Only the host changes: $THINGSBOARD_HOST_NAME is the gateway."""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

SPEC = Path("/work/shared/spec/http-device-api.md")
TOKEN = "A1_TEST_TOKEN"
DEVICE = "Boiler 7"
KEY, SECRET = "u7piawkboq8v32dmcmpp", "jpmwdn8ptlswmf4m29bw"
PE = 'http://$THINGSBOARD_HOST_NAME/api/v1/$ACCESS_TOKEN'

# the spec's commands for a self-hosted ThingsBoard (docsPrefix "pe/"), character for character
TELEMETRY_1 = ('curl -v -X POST --data "{"temperature":42,"humidity":73}" ' + PE
               + '/telemetry --header "Content-Type:application/json"')
TELEMETRY_FILE = 'curl -v -X POST -d @{file} ' + PE + '/telemetry --header "Content-Type:application/json"'
ATTRIBUTES_1 = ('curl -v -X POST --data "{"attribute1": "value1", "attribute2":true, "attribute3": 43.0}" '
                + PE + '/attributes --header "Content-Type:application/json"')
ATTRIBUTES_2 = ('curl -v -X POST -d @new-attributes-values.json ' + PE
                + '/attributes --header "Content-Type:application/json"')
# the self-hosted variant leaves "&" unquoted (the shell would cut the URL); the quoted cloud variant, host swapped
ATTRIBUTES_GET = ('curl -v -X GET "https://demo.thingsboard.io/api/v1/$ACCESS_TOKEN/attributes'
                  '?clientKeys=attribute1,attribute2&sharedKeys=shared1,shared2"')
UPDATES = 'curl -v -X GET ' + PE + '/attributes/updates?timeout=20000'
RPC_POLL = 'curl -v -X GET ' + PE + '/rpc?timeout=20000'
RPC_REPLY = 'curl -v -X POST -d @rpc-response.json ' + PE + '/rpc/1 --header "Content-Type:application/json"'
CLIENT_RPC = 'curl -X POST -d @rpc-client-request.json ' + PE + '/rpc --header "Content-Type:application/json"'

FILES = {
    "telemetry-data-as-object.json": '{\n  "stringKey": "value1",\n  "booleanKey": true,\n  "doubleKey": 42.0,\n'
    '  "longKey": 73,\n  "jsonKey": {\n    "someNumber": 42,\n    "someArray": [1,2,3],\n'
    '    "someNestedObject": {"key": "value"}\n  }\n}',
    "telemetry-data-as-array.json": '[{"key1":"value1"}, {"key2":true}]',
    "telemetry-data-with-ts.json": '{\n  "ts": 1451649600512,\n  "values": {\n    "stringKey": "value1",\n'
    '    "booleanKey": true,\n    "doubleKey": 42.0,\n    "longKey": 73,\n    "jsonKey": {\n'
    '      "someNumber": 42,\n      "someArray": [1, 2, 3],\n      "someNestedObject": {\n'
    '        "key": "value"\n      }\n    }\n  }\n}',
    "new-attributes-values.json": '{\n  "attribute1": "value1",\n  "attribute2": true,\n  "attribute3": 42.0,\n'
    '  "attribute4": 73,\n  "attribute5": {\n    "someNumber": 42,\n    "someArray": [1,2,3],\n'
    '    "someNestedObject": {"key": "value"}\n  }\n}',
    "rpc-response.json": '{"result":"ok"}',
    "rpc-client-request.json": '{"method": "getCurrentTime", "params": {}}',
}
NESTED = {"someNumber": 42, "someArray": [1, 2, 3], "someNestedObject": {"key": "value"}}


def test_commands_are_the_specs() -> None:
    if not SPEC.exists():
        pytest.skip("http-device-api.md is not on this machine")
    text = SPEC.read_text(encoding="utf-8")
    for command in (TELEMETRY_1, ATTRIBUTES_1, ATTRIBUTES_2, ATTRIBUTES_GET, UPDATES, RPC_POLL, RPC_REPLY,
                    CLIENT_RPC, *(TELEMETRY_FILE.format(file=f) for f in list(FILES)[:3])):
        assert command in text, command
    for name in list(FILES)[:4]:
        block = FILES[name].replace("\n", "").replace(" ", "")
        assert block in re.sub(r"\s", "", text), name


@pytest.fixture
def gateway(make_daemon, tmp_path: Path):
    firmware = tmp_path / "firmware" / "TEST_FW" / "1.0"
    firmware.mkdir(parents=True)
    (firmware / "firmware.bin").write_bytes(b"\x7fELF" + bytes(range(200)))
    rest = {"host": "127.0.0.1", "port": "0", "mapping": [
        {"endpoint": "/x", "converter": {"type": "json", "deviceNameExpression": "${n}"}}],
        "deviceApi": {"devices": [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "boiler"}],
                      "provisioning": {"provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET},
                      "firmware": {"path": str(tmp_path / "firmware")}}}
    gw = make_daemon(rest)
    for name, content in FILES.items():
        Path(gw.workdir, name).write_text(content, encoding="utf-8")
    return gw


def shell(gw, command: str, token: str = TOKEN) -> tuple[int, bytes]:
    """Run ``command`` in a shell as a device would, and return (HTTP status, body)."""
    command = command.replace("https://demo.thingsboard.io", "http://$THINGSBOARD_HOST_NAME")
    command = command.replace("curl ", "curl -s -o body.out -w '%{http_code}' ", 1).replace(" -v ", " ")
    env = dict(os.environ, ACCESS_TOKEN=token, THINGSBOARD_HOST_NAME=f"127.0.0.1:{gw.port}")
    out = subprocess.run(["bash", "-c", command], cwd=gw.workdir, env=env, capture_output=True, timeout=60,
                         check=True)
    return int(out.stdout), Path(gw.workdir, "body.out").read_bytes()


def test_spec_telemetry_and_attribute_examples(gateway, mqtt_subscriber) -> None:
    for command in (TELEMETRY_1, *(TELEMETRY_FILE.format(file=f) for f in list(FILES)[:3]),
                    ATTRIBUTES_1, ATTRIBUTES_2):
        assert shell(gateway, command) == (200, b""), command
    assert mqtt_subscriber.wait_for(lambda _m: len(mqtt_subscriber.telemetry_for(DEVICE)) >= 4
                                    and len(mqtt_subscriber.on("v1/gateway/attributes")) >= 2, 15)
    entries = mqtt_subscriber.telemetry_for(DEVICE)
    values = [e["values"] for e in entries]
    assert values[0] == {"temperature": 42, "humidity": 73}  # the shell ate the quotes; read as Gson does
    assert values[1] == {"stringKey": "value1", "booleanKey": True, "doubleKey": 42.0, "longKey": 73,
                         "jsonKey": NESTED}
    assert values[2] == {"key1": "value1", "key2": True}
    assert entries[3] == {"ts": 1451649600512, "values": values[1]}
    attributes = mqtt_subscriber.on("v1/gateway/attributes")
    assert attributes[0] == {DEVICE: {"attribute1": "value1", "attribute2": True, "attribute3": 43.0}}
    assert attributes[1][DEVICE]["attribute5"] == NESTED and attributes[1][DEVICE]["attribute4"] == 73
    assert mqtt_subscriber.connects()[0] == {"device": DEVICE, "type": "boiler"}
    assert shell(gateway, TELEMETRY_1, token="wrong")[0] == 401
    assert TOKEN not in gateway.log_text()


def background(gw, command: str) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(shell(gw, command)))
    thread.start()
    return thread, result


def test_spec_attribute_examples_with_thingsboard(gateway, mqtt_subscriber) -> None:
    def answer(request: dict) -> None:
        found = {"attribute1": "value1", "attribute2": True} if request["client"] else {}
        mqtt_subscriber.publish("v1/gateway/attributes/response",
                                {"id": request["id"], "device": DEVICE, "values": found})

    thread, result = background(gateway, ATTRIBUTES_GET)
    for count in (1, 2):
        assert mqtt_subscriber.wait_for(lambda m, c=count: len(
            [1 for t, _, _ in m if t == "v1/gateway/attributes/request"]) >= c, 15)
        answer(mqtt_subscriber.on("v1/gateway/attributes/request")[count - 1])
    thread.join(30)
    assert result[0][0] == 200 and json.loads(result[0][1]) == {"client": {"attribute1": "value1",
                                                                           "attribute2": True}}

    thread, result = background(gateway, UPDATES)
    mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"fw_title": "TEST_FW",
                                                                                 "fw_version": "1.0"}})
    thread.join(30)
    assert result[0][0] == 200 and json.loads(result[0][1]) == {"fw_title": "TEST_FW", "fw_version": "1.0"}
    fw = 'curl -v -X GET "' + PE + '/firmware?title=TEST_FW&version=1.0"'
    status, body = shell(gateway, fw)
    assert status == 200 and body.startswith(b"\x7fELF") and len(body) == 204
    assert shell(gateway, fw.replace('1.0"', '1.0&size=100&chunk=2"')) == (200, bytes(range(196, 200)))


def test_spec_rpc_examples(gateway, mqtt_subscriber) -> None:
    thread, result = background(gateway, RPC_POLL)
    mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {"id": 1, "method": "setGpio",
                                                                          "params": {"pin": "23", "value": 1}}})
    thread.join(30)
    assert result[0][0] == 200
    assert json.loads(result[0][1]) == {"id": 1, "method": "setGpio", "params": {"pin": "23", "value": 1}}
    assert shell(gateway, RPC_REPLY) == (200, b"")
    assert mqtt_subscriber.wait_for(lambda _m: {"device": DEVICE, "id": 1, "data": {"result": "ok"}}
                                    in mqtt_subscriber.on("v1/gateway/rpc"), 10)

    thread, result = background(gateway, CLIENT_RPC)
    assert mqtt_subscriber.wait_for(lambda m: any(t.startswith("v1/devices/me/rpc/request/") and
                                                  b.get("method") == "getCurrentTime" for t, b, _ in m), 15)
    topic = next(t for t, b, _ in mqtt_subscriber.messages if t.startswith("v1/devices/me/rpc/request/")
                 and b.get("method") == "getCurrentTime")
    mqtt_subscriber.publish(topic.replace("request", "response"), {"time": "2016 11 21 12:54:44.287"})
    thread.join(30)
    assert result[0] == (200, b'{"time":"2016 11 21 12:54:44.287"}')


def test_spec_claim_and_provisioning_survive_a_restart(gateway, mqtt_subscriber) -> None:
    claim = "curl -X POST -d '{\"secretKey\":\"value\", \"durationMs\":60000}' " + PE + "/claim"
    assert shell(gateway, claim) == (200, b"")
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.on("v1/gateway/claim") ==
                                    [{DEVICE: {"secretKey": "value", "durationMs": 60000}}], 10)
    request = {"deviceName": "DEVICE_NAME", "provisionDeviceKey": KEY, "provisionDeviceSecret": SECRET}
    provision = f"curl -X POST -d '{json.dumps(request)}' http://$THINGSBOARD_HOST_NAME/api/v1/provision"
    status, body = shell(gateway, provision)
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "SUCCESS" and answer["credentialsType"] == "ACCESS_TOKEN"
    assert json.loads(shell(gateway, provision)[1])["status"] == "FAILURE"
    wrong = provision.replace(SECRET, "nope")
    assert json.loads(shell(gateway, wrong)[1]) == {"errorMsg": "Provision data was not found!",
                                                    "status": "NOT_FOUND"}
    assert gateway.stop() == 0
    gateway.start()
    assert shell(gateway, TELEMETRY_1, token=answer["credentialsValue"]) == (200, b"")
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for("DEVICE_NAME"), 15)
    assert answer["credentialsValue"] not in gateway.log_text()
