"""The RPC round-trip scenario: a paho client plays ThingsBoard, 100 devices each with one RPC outstanding."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.load import LoadResult
from bench.report import RunResult
from bench.scenarios import Scenario
from bench.systems import (
    GatewayServer,
    Mosquitto,
    RpcTargetServer,
    cpu_seconds,
    gateway_metrics,
    gateway_system,
    peak_rss_mb,
    scratch_dir,
    start_py_spy,
)

TOPIC_RPC = "v1/gateway/rpc"
RPC_METHOD = "echo"
DEVICE_PREFIX = "RPC-"
PROBE_DEVICE = "RPC-PROBE"


def rpc_rest_extra(target_url: str, response_timeout: float = 5.0) -> dict[str, Any]:
    """The ``serverSideRpc`` section the gateway runs with: every ``echo`` RPC is POSTed to the target."""
    return {"serverSideRpc": [{
        "deviceNameFilter": ".*",
        "methodFilter": RPC_METHOD,
        "requestUrlExpression": target_url + "/rpc/${deviceName}",
        "responseTimeout": response_timeout,
        "HTTPMethod": "POST",
        "valueExpression": "${params}",
        "timeout": response_timeout,
        "tries": 1,
        "httpHeaders": {"Content-Type": "application/json"},
        "security": {"type": "anonymous"},
    }]}


def percentile(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of already sorted values; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


@dataclass
class _Window:
    start: float | None = None
    end: float | None = None
    latencies: list[float] = field(default_factory=list)  # seconds, replies that arrived in the window
    replies: int = 0
    errors: int = 0

    def holds(self, now: float) -> bool:
        return self.start is not None and now >= self.start and (self.end is None or now < self.end)


class RpcPlatform:
    """Plays ThingsBoard on the bench's broker: publishes RPCs on ``v1/gateway/rpc`` and times the replies.

    Closed loop: each of ``devices`` devices has one RPC outstanding; its reply triggers its next
    RPC. MQTT 5 with noLocal, so the client never receives its own requests back.
    """

    def __init__(self, port: int, devices: int, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.devices = host, port, devices
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._answered = threading.Condition(self._lock)
        self._outstanding: dict[int, tuple[int, float, int]] = {}  # id -> (device index, sent at, seq)
        self._probes: set[int] = set()
        self._next_id = 0
        self._sending = False
        self._rate = 0.0  # 0: closed loop; else RPCs/s paced over the idle devices (open loop)
        self._idle: deque[int] = deque()
        self._pacer: threading.Thread | None = None
        self.deferred = 0  # open loop: ticks with every device still waiting (the rate was not reachable)
        self.window = _Window()
        self.sent = 0
        self.replied = 0
        self.errors = 0  # replies that are not {"result": <the params sent>}, whole run
        self.unexpected = 0  # replies to no outstanding RPC (e.g. a QoS 1 duplicate)
        self.error_examples: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-rpc-platform", protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_socket_open = self._on_socket_open

    # ------------------------------------------------------------------ MQTT callbacks

    @staticmethod
    def _on_socket_open(client: mqtt.Client, userdata: object, sock: Any) -> None:
        """No Nagle on our side, as ThingsBoard's Netty transport (its default TCP_NODELAY is on)."""
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    props: object) -> None:
        client.subscribe(TOPIC_RPC, options=SubscribeOptions(qos=1, noLocal=True))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            reply = json.loads(message.payload)
            request_id, data = reply["id"], reply["data"]
        except (ValueError, KeyError, TypeError):
            return  # not a reply (an RPC request echoed by a broker ignoring noLocal)
        with self._lock:
            sent = self._outstanding.pop(request_id, None)
            if sent is None:
                self.unexpected += 1
                return
            index, sent_at, seq = sent
            self.replied += 1
            ok = isinstance(data, dict) and isinstance(data.get("result"), dict) and data["result"].get("seq") == seq
            if not ok:
                self.errors += 1
                if len(self.error_examples) < 3:
                    self.error_examples.append(json.dumps(reply)[:300])
            if self.window.holds(now):
                self.window.replies += 1
                self.window.latencies.append(now - sent_at)
                self.window.errors += not ok
            self._answered.notify_all()
            again = self._sending and index >= 0 and not self._rate
            if index >= 0 and self._rate:
                self._idle.append(index)
        if again:
            self._send(index)

    # ------------------------------------------------------------------ sending

    def _send(self, index: int) -> int:
        device = PROBE_DEVICE if index < 0 else f"{DEVICE_PREFIX}{index:03d}"
        with self._lock:
            self._next_id += 1
            request_id = seq = self._next_id
            self._outstanding[request_id] = (index, time.perf_counter(), seq)
            self.sent += 1
        payload = json.dumps({"device": device, "data": {"id": request_id, "method": RPC_METHOD,
                                                         "params": {"command": "ping", "seq": seq}}})
        self.client.publish(TOPIC_RPC, payload, qos=1)
        return request_id

    # ------------------------------------------------------------------ phases

    def start(self, timeout: float = 10.0) -> RpcPlatform:
        """Connect and subscribe (raises RuntimeError if the broker does not let us)."""
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise RuntimeError("the RPC platform client did not subscribe")
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Probe until the gateway answers one RPC (it subscribes some time after its HTTP side is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = self._send(-1)
            with self._lock:
                self._probes.add(probe)
                if self._answered.wait_for(lambda p=probe: p not in self._outstanding, 0.25):
                    for stale in self._probes:  # probes sent before the gateway subscribed: never answered
                        self._outstanding.pop(stale, None)
                    self._probes.clear()
                    self.sent, self.replied, self.errors = 0, 0, 0
                    return
        raise RuntimeError(f"the gateway answered no RPC in {timeout:.0f} s")

    def run(self, rate: float = 0.0) -> None:
        """Start sending. ``rate`` 0: closed loop, one RPC per device now and the next on each reply.

        ``rate`` > 0: open loop, ``rate`` RPCs/s in all, each to a device with none outstanding.
        """
        with self._lock:
            self._sending, self._rate = True, rate
            self._idle = deque(range(self.devices))
        if rate:
            self._pacer = threading.Thread(target=self._pace, name="bench-rpc-pacer", daemon=True)
            self._pacer.start()
            return
        for index in range(self.devices):
            self._send(index)

    def _pace(self) -> None:
        interval = 1.0 / self._rate
        due = time.perf_counter()
        while True:
            with self._lock:
                if not self._sending:
                    return
                index = self._idle.popleft() if self._idle else None
                if index is None:
                    self.deferred += 1
            if index is not None:
                self._send(index)
            due += interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    def open_window(self) -> None:
        with self._lock:
            self.window = _Window(start=time.perf_counter())

    def close_window(self) -> None:
        """End the measured window and stop sending; RPCs still outstanding keep being awaited."""
        with self._lock:
            self.window.end = time.perf_counter()
            self._sending = False
        if self._pacer is not None:
            self._pacer.join(5)

    def wait_outstanding(self, timeout: float) -> int:
        """Wait for the replies still due; the number of RPCs that got none."""
        with self._lock:
            self._answered.wait_for(lambda: not self._outstanding, timeout)
            return len(self._outstanding)

    def result(self, missing: int) -> LoadResult:
        """The window as a LoadResult: requests = replies, non_2xx = error replies, socket_errors = no reply."""
        with self._lock:
            window = self.window
            seconds = (window.end or time.perf_counter()) - (window.start or 0.0)
            latencies = sorted(window.latencies)
        ms = [x * 1000 for x in latencies]
        return LoadResult("mqtt-rpc", seconds, window.replies, window.errors, missing,
                          percentile(ms, 50), percentile(ms, 99), ms[-1] if ms else float("nan"))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class RpcRun:
    """How to run one RPC measurement (the parts of the command line it needs)."""

    warmup: float
    duration: float
    gateway_threads: int | None
    log_level: str
    code_root: str
    switch_interval: float | None
    profile: str | None
    rate: float = 0.0  # RPCs/s, open loop; 0: closed loop
    reply_timeout: float = 5.0


def measure_rpc(run: RpcRun, system: str, scenario: Scenario, devices: int, pin: bool, rep: int, broker: Mosquitto,
                server_cpus: set[int] | None, load_cpus: set[int] | None) -> RunResult:
    """Gateway ``system`` fresh, the target on the load CPUs, ``devices`` closed-loop RPC devices."""
    with scratch_dir(f"bench-rpc-{system}-") as workdir, scratch_dir("bench-rpc-target-") as target_dir:
        target = RpcTargetServer(target_dir, load_cpus)
        storage, durability = gateway_system(system)
        server = GatewayServer(workdir, server_cpus, storage, broker, scenario.mapping(),
                               run.gateway_threads, run.log_level, run.code_root, run.switch_interval,
                               rest_extra=rpc_rest_extra(target.url, run.reply_timeout), durability=durability,
                               metrics=gateway_metrics(system))
        platform = RpcPlatform(broker.port, devices)
        try:
            target.start()
            server.start()
            platform.start()
            platform.wait_ready()
            platform.run(run.rate)
            time.sleep(run.warmup)
            spy = None
            if run.profile:
                label = f"{scenario.name}-c{devices}-{'pin' if pin else 'nopin'}-{system}-r{rep}"
                spy = start_py_spy(server.pid, run.duration, run.profile, label, load_cpus)
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            platform.open_window()
            time.sleep(run.duration)
            platform.close_window()
            cpu_pct = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0) * 100
            missing = platform.wait_outstanding(run.reply_timeout + 5.0)
            if spy is not None:
                spy.wait(60)
            rss = peak_rss_mb(server.pid)
        finally:
            platform.close()
            server.stop()
            target.stop()
    if platform.error_examples:
        print(f"  rpc error replies ({platform.errors}), e.g. {platform.error_examples}", flush=True)
    if platform.deferred:
        print(f"  rpc: {platform.deferred} ticks found every device waiting: {run.rate:g} RPCs/s was not reached",
              flush=True)
    name = f"{scenario.name}@{run.rate:g}/s" if run.rate else scenario.name
    return RunResult(name, devices, pin, rep, system, platform.result(missing), 1, None, 0.0, cpu_pct, rss)
