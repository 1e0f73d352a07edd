"""libcoap's ``coap-client`` against the daemon process, running the commands docs/device-api.md gives
users (read from the document, only host, port and token filled in), with a real broker playing
ThingsBoard: telemetry, attributes, attribute requests, Observe and a Block2 firmware download."""
from __future__ import annotations

import json
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.coap import coap_rest, free_udp_port, needs_coap_client
from tests.fixtures.daemon import ROOT

TOKEN, DEVICE = "A1_TEST_TOKEN", "Boiler 7"  # the token the document's examples use
FIRMWARE = bytes((i * 7) % 256 for i in range(20_000))  # twenty 1024-byte blocks


def documented_commands() -> list[str]:
    """The ``coap-client`` lines of the CoAP section's shell example, as users would paste them."""
    text = (Path(ROOT) / "docs" / "device-api.md").read_text(encoding="utf-8")
    section = text.split("### Try it with libcoap's `coap-client`", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/device-api.md has no bash block under 'Try it with libcoap's coap-client'"
    return [line for line in block.group(1).splitlines() if line.startswith("coap-client ")]


def documented(containing: str, port: int, *extra: str) -> list[str]:
    """The documented command whose text contains ``containing``, ready to run against ``port``;
    ``extra`` options go before the URI."""
    matches = [line for line in documented_commands() if containing in line]
    assert len(matches) == 1, f"expected one documented coap-client command with {containing!r}: {matches}"
    line = matches[0].replace("$ACCESS_TOKEN", TOKEN).replace("coap://127.0.0.1/", f"coap://127.0.0.1:{port}/")
    argv = shlex.split(line)
    return [needs_coap_client(), *argv[1:-1], *extra, argv[-1]]


def run(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def gateway(make_daemon, tmp_path: Path):
    needs_coap_client()
    folder = tmp_path / "firmware" / "TEST_FW" / "1.0"
    folder.mkdir(parents=True)
    (folder / "boiler-1.0.bin").write_bytes(FIRMWARE)
    port = free_udp_port()
    rest = coap_rest(port, [{"accessToken": TOKEN, "deviceName": DEVICE, "deviceType": "boiler"}])
    rest["deviceApi"]["firmware"] = {"path": str(tmp_path / "firmware")}
    gw = make_daemon(rest)
    gw.coap_port = port
    return gw


def observations(gw, kind: str) -> float:
    text = requests.get(gw.admin_url("/metrics"), timeout=5).text
    match = re.search(rf"^rest_gateway_device_api_coap_observations_{kind}{{[^}}]*}} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_telemetry_and_attributes_posts(gateway, mqtt_subscriber, tmp_path) -> None:
    verbose = run(documented("/telemetry", gateway.coap_port, "-v", "6"), tmp_path)
    assert verbose.returncode == 0 and verbose.stderr == b"", verbose
    assert re.search(rb"t:ACK c:2\.01 ", verbose.stdout), verbose.stdout  # piggybacked 2.01
    plain = run(documented('"attribute1":"value1"', gateway.coap_port), tmp_path)
    assert plain.returncode == 0 and plain.stdout == b"" and plain.stderr == b"", plain  # 2.01 prints nothing
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.telemetry_for(DEVICE), 15)
    assert mqtt_subscriber.telemetry_for(DEVICE)[0]["values"] == {"temperature": 42, "humidity": 73}
    assert mqtt_subscriber.wait_for(lambda _m: mqtt_subscriber.attributes_for(DEVICE), 15)
    assert mqtt_subscriber.attributes_for(DEVICE) == {"attribute1": "value1", "attribute2": True}
    # an error is a code and a diagnostic on stderr
    bad = run([needs_coap_client(), "-m", "post", "-e", '{"temperature":',
               f"coap://127.0.0.1:{gateway.coap_port}/api/v1/{TOKEN}/telemetry"], tmp_path)
    assert bad.stderr.startswith(b"4.00 ") and b"JSON" in bad.stderr, bad
    assert len(mqtt_subscriber.telemetry_for(DEVICE)) == 1


def keys_of(request: dict) -> list[str]:
    """The keys of a gateway attribute request: ``"keys": [...]``, or ``"key"`` when only one is asked."""
    return request["keys"] if "keys" in request else [request["key"]]


def answer_attribute_requests(subscriber, values: dict[bool, dict], count: int) -> None:
    """Play ThingsBoard: answer the gateway's first ``count`` attribute requests from ``values``."""
    for index in range(count):
        assert subscriber.wait_for(lambda m, i=index: len(
            [1 for t, _, _ in m if t == "v1/gateway/attributes/request"]) > i, 20)
        request = subscriber.on("v1/gateway/attributes/request")[index]
        found = {k: v for k, v in values[request["client"]].items() if k in keys_of(request)}
        answer = {"id": request["id"], "device": request["device"]}
        if "key" in request:  # as ThingsBoard: one key asked, its value alone
            answer.update({"value": found[request["key"]]} if request["key"] in found else {})
        else:
            answer["values"] = found
        subscriber.publish("v1/gateway/attributes/response", answer)


def test_attribute_request_with_client_and_shared_keys(gateway, mqtt_subscriber, tmp_path) -> None:
    client = subprocess.Popen(documented("clientKeys=", gateway.coap_port), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        answer_attribute_requests(mqtt_subscriber, {True: {"attribute1": "value1", "attribute2": True},
                                                    False: {"shared1": 17, "other": 1}}, 2)
        out, err = client.communicate(timeout=60)
    finally:
        client.kill()
    assert err == b"", err
    assert json.loads(out) == {"client": {"attribute1": "value1", "attribute2": True}, "shared": {"shared1": 17}}
    asked = mqtt_subscriber.on("v1/gateway/attributes/request")
    assert sorted((r["client"], keys_of(r)) for r in asked) == [(False, ["shared1"]),
                                                              (True, ["attribute1", "attribute2"])]


class Lines:
    """A process's stdout, line by line, read on a thread so the test can wait with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip(b"\n"))

    def next(self, timeout: float = 30) -> bytes:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from coap-client in {timeout} s") from None


def wait_until(condition, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_observe_attributes(gateway, mqtt_subscriber, tmp_path) -> None:
    observer = subprocess.Popen(documented("-s 60 coap://127.0.0.1/api/v1/$ACCESS_TOKEN/attributes",
                                           gateway.coap_port), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        output = Lines(observer)
        assert json.loads(output.next()) == {}  # the first notification: nothing kept for the device
        assert observations(gateway, "attributes") == 1
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"targetTemperature": 22}})
        assert json.loads(output.next()) == {"targetTemperature": 22}
        mqtt_subscriber.publish("v1/gateway/attributes", {"device": DEVICE, "data": {"deleted": ["mode"]}})
        assert json.loads(output.next()) == {"deleted": ["mode"]}
        observer.send_signal(signal.SIGINT)  # coap-client cancels its observation when interrupted
        assert observer.wait(30) == 0
    finally:
        observer.kill()
    assert observer.stderr.read() == b""
    assert wait_until(lambda: observations(gateway, "attributes") == 0)


def test_observe_rpc_and_reply(gateway, mqtt_subscriber, tmp_path) -> None:
    observer = subprocess.Popen(documented("-s 60 coap://127.0.0.1/api/v1/$ACCESS_TOKEN/rpc", gateway.coap_port),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        output = Lines(observer)
        assert wait_until(lambda: observations(gateway, "rpc") == 1)  # 2.03 first: it prints nothing
        for request_id, pin in ((1, 23), (2, 24)):  # back to back: both arrive, in order
            mqtt_subscriber.publish("v1/gateway/rpc", {"device": DEVICE, "data": {
                "id": request_id, "method": "setGpio", "params": {"pin": pin}}})
        assert [json.loads(output.next()) for _ in range(2)] == [
            {"id": 1, "method": "setGpio", "params": {"pin": 23}},
            {"id": 2, "method": "setGpio", "params": {"pin": 24}}]
        reply = run(documented("/rpc/1", gateway.coap_port), tmp_path)
        assert reply.returncode == 0 and reply.stderr == b"", reply
        observer.send_signal(signal.SIGINT)
        assert observer.wait(30) == 0
    finally:
        observer.kill()
    assert mqtt_subscriber.wait_for(lambda _m: any("id" in m for m in mqtt_subscriber.on("v1/gateway/rpc")), 15)
    assert [m for m in mqtt_subscriber.on("v1/gateway/rpc") if "id" in m] == [
        {"device": DEVICE, "id": 1, "data": {"result": "ok"}}]


@pytest.mark.parametrize("block_size", [None, "64"], ids=["documented", "64-byte-blocks"])
def test_block2_firmware_download(gateway, tmp_path, block_size) -> None:
    argv = documented("/fw/", gateway.coap_port)
    if block_size is not None:
        argv[argv.index("-b") + 1] = block_size
    done = run(argv, tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done
    downloaded = (tmp_path / "firmware.bin").read_bytes()
    assert len(downloaded) == len(FIRMWARE) and downloaded == FIRMWARE
    verbose = run([*argv[:-1], "-v", "6", argv[-1]], tmp_path)
    size = int(block_size or argv[argv.index("-b") + 1])
    blocks = re.findall(rb"c:2\.05 .*?Block2:(\d+)/([M_])/(\d+)", verbose.stdout)
    assert len(blocks) == -(-len(FIRMWARE) // size) and {int(b[2]) for b in blocks} == {size}
    assert blocks[-1][1] == b"_" and all(b[1] == b"M" for b in blocks[:-1])
    missing = run([*argv[:-1], argv[-1].replace("version=1.0", "version=9.9")], tmp_path)
    assert missing.stderr.startswith(b"4.04"), missing


def test_attribute_answer_larger_than_a_datagram_comes_block_by_block(gateway, mqtt_subscriber, tmp_path) -> None:
    keys = [f"config{i}" for i in range(8)]
    values = {key: key[-1] * 300 for key in keys}  # ~2.5 KB of JSON: more than one 1024-byte datagram
    argv = [needs_coap_client(), "-m", "get", "-b", "64", "-v", "6",
            f"coap://127.0.0.1:{gateway.coap_port}/api/v1/{TOKEN}/attributes?clientKeys={','.join(keys)}"]
    client = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        answer_attribute_requests(mqtt_subscriber, {True: values}, 1)
        out, err = client.communicate(timeout=60)
    finally:
        client.kill()
    assert err == b"", err
    blocks = re.findall(rb"c:2\.05 .*?Block2:(\d+)/([M_])/64", out)
    assert len(blocks) == -(-len(json.dumps({"client": values}, separators=(",", ":"))) // 64), out[-2000:]
    payload = b"".join(re.findall(rb":: '(.*?)'\n", out))  # what -v 6 shows of each block, in order
    assert json.loads(payload) == {"client": values}
    # the later blocks come from the answer kept for the request: ThingsBoard was asked once
    assert len(mqtt_subscriber.on("v1/gateway/attributes/request")) == 1
