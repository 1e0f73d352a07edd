"""What each benchmark scenario posts (body per request, as wrk Lua and as Python) and how it converts."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENDPOINT = "/my_devices"
#: the device API scenario (devapi): one configured device posting ThingsBoard's telemetry to its token's URL
DEVICE_TOKEN = "BENCH_TOKEN_00000"
DEVICE_API_PATH = f"/api/v1/{DEVICE_TOKEN}/telemetry"
DEVICE_API_BODY = '{"temperature":42.5,"humidity":73}'  # bench/coap.py's payload

# The spec's example request body and converter (rest-connector.md), anonymous security.
SPEC_BODY = {"sensorName": "SN-001", "sensorType": "Thermometer", "sensorModel": "T1000",
             "certificateNumber": "125sda47gsh", "temp": 32, "hum": 67}
SPEC_CONVERTER: dict[str, Any] = {
    "type": "json",
    "deviceNameExpression": "${sensorName}",
    "deviceTypeExpression": "${sensorType}",
    "attributes": [
        {"type": "string", "key": "model", "value": "${sensorModel}"},
        {"type": "string", "key": "${sensorModel}", "value": "on"},
    ],
    "timeseries": [
        {"type": "double", "key": "temperature", "value": "${temp}"},
        {"type": "double", "key": "humidity", "value": "${hum}"},
    ],
}
DISTINCT_DEVICES = 10_000
ARRAY_SIZE = 100
WIDE_KEYS = 20


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def _wide_body() -> dict[str, Any]:
    """About 2 KB: the spec's fields plus 20 numeric readings and padding text."""
    body: dict[str, Any] = dict(SPEC_BODY)
    for i in range(WIDE_KEYS):
        body[f"reading{i:02d}"] = 1000.25 + i
    body["notes"] = "x" * 1400
    return body


def _wide_converter() -> dict[str, Any]:
    converter = json.loads(json.dumps(SPEC_CONVERTER))
    converter["timeseries"] = [{"type": "double", "key": f"r{i:02d}", "value": f"${{reading{i:02d}}}"}
                               for i in range(WIDE_KEYS)]
    return converter


@dataclass(frozen=True)
class Scenario:
    """One request shape: the mapping the gateway serves and the bodies the load sends."""

    name: str
    description: str
    converter: dict[str, Any]
    messages_per_request: int
    fixed_body: str | None = None  # the same body every request
    device_prefix: str | None = None  # else: SPEC_BODY with sensorName = prefix + (n % DISTINCT_DEVICES)
    rpc: bool = False  # RPC round trip over MQTT (bench/rpc.py); fixed_body is then the RPC's params
    path: str = ENDPOINT  # where the load posts
    device_api: bool = False  # the gateway also serves the device API (one device, DEVICE_TOKEN)
    side_by_side: str | None = None  # run within that scenario's repetitions when both are asked for

    def mapping(self) -> dict[str, Any]:
        return {"endpoint": ENDPOINT, "HTTPMethod": ["POST"], "security": {"type": "anonymous"},
                "converter": self.converter}

    def rest_extra(self) -> dict[str, Any]:
        """rest.json settings beside the mapping: the device API with one device.

        ``maxConcurrentPolls`` 1: each allowed long poll adds a waitress thread (256 by default), and
        more threads let one group commit carry more requests; with 1 the gateway has the mapping
        scenarios' thread count + 1, so the two endpoints are compared on the same footing.
        """
        if not self.device_api:
            return {}
        return {"deviceApi": {"maxConcurrentPolls": 1,
                              "devices": [{"accessToken": DEVICE_TOKEN, "deviceName": "Device API bench"}]}}

    def body_factory(self) -> Callable[[int], bytes]:
        """Python load generator: the body of request number ``n``."""
        if self.fixed_body is not None:
            encoded = self.fixed_body.encode()
            return lambda n: encoded
        head, tail = _device_body_parts(self.device_prefix or "")
        return lambda n: (head + str(n % DISTINCT_DEVICES) + tail).encode()

    def wrk_lua(self) -> str:
        """The wrk script: POST the body (or build it per request), print a machine-readable summary."""
        lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
        if self.fixed_body is not None:
            lines.append(f"wrk.body = [==[{self.fixed_body}]==]")
        else:
            head, tail = _device_body_parts(self.device_prefix or "")
            lines += [
                f"local head = [==[{head}]==]",
                f"local tail = [==[{tail}]==]",
                "offset = 0",
                "local counter = 0",
                "request = function()",
                "  counter = counter + 1",
                f"  local name = tostring((counter + offset) % {DISTINCT_DEVICES})",
                "  return wrk.format(nil, nil, nil, head .. name .. tail)",
                "end",
                "local index = 0",
                "setup = function(thread)",
                "  thread:set(\"offset\", index * 3779)",
                "  index = index + 1",
                "end",
            ]
        lines += [
            "done = function(summary, latency, requests)",
            "  local e = summary.errors",
            '  io.write(string.format("BENCH_RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",',
            "    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,",
            "    latency:percentile(50), latency:percentile(99), latency.max))",
            "end",
        ]
        return "\n".join(lines) + "\n"


def _device_body_parts(prefix: str) -> tuple[str, str]:
    marker = "\u0000NAME\u0000"
    text = _dumps(dict(SPEC_BODY, sensorName=marker))
    head, tail = text.split(json.dumps(marker))
    return head + '"' + prefix, '"' + tail


def _array_body() -> str:
    return _dumps([dict(SPEC_BODY, sensorName=f"SN-{i:03d}", temp=20 + i % 10) for i in range(ARRAY_SIZE)])


SCENARIOS: dict[str, Scenario] = {
    "main": Scenario("main", "the spec's body and converter, one device (SN-001)", SPEC_CONVERTER, 1,
                     fixed_body=_dumps(SPEC_BODY)),
    "array": Scenario("array", f"JSON array of {ARRAY_SIZE} messages ({ARRAY_SIZE} devices) per request",
                      SPEC_CONVERTER, ARRAY_SIZE, fixed_body=_array_body()),
    "devices": Scenario("devices", f"{DISTINCT_DEVICES:,} distinct device names, cycled",
                        SPEC_CONVERTER, 1, device_prefix="SN-"),
    "wide": Scenario("wide", f"~2 KB body, {WIDE_KEYS} timeseries expressions", _wide_converter(), 1,
                     fixed_body=_dumps(_wide_body())),
}
RPC_PARAMS = {"command": "ping", "seq": 0}
SCENARIOS["devapi"] = Scenario(
    "devapi", "the HTTP device API's telemetry, POST /api/v1/{token}/telemetry, one device, beside main",
    SPEC_CONVERTER, 1, fixed_body=DEVICE_API_BODY, path=DEVICE_API_PATH, device_api=True, side_by_side="main")
SCENARIOS["rpc"] = Scenario(
    "rpc", "RPC round trip: v1/gateway/rpc -> serverSideRpc -> local HTTP target -> reply on v1/gateway/rpc",
    SPEC_CONVERTER, 1, fixed_body=_dumps(RPC_PARAMS), rpc=True)
