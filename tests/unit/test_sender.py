"""The Sender alone: driven against a small in-process Session and SenderHost, with the real memory storage.

The loopback session is a real implementation of :class:`gateway.northbound.sender_ports.Session` (message
ids, PUBACKs with reason codes, a lost connection), so the window, trimming, rejections and resending
are checked without a broker; the broker-backed behaviour is in tests/integration/test_northbound*.py.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.config.model import ThingsBoardConfig
from gateway.northbound.known_devices import KnownDevices
from gateway.northbound.publishes import DeadLetter, Publish, rpc_reply_publish
from gateway.northbound.sender import Sender
from gateway.northbound.session import SessionLost
from gateway.stats import Histogram
from gateway.storage.memory import MemoryStorage, SizeLimits

TELEMETRY = "v1/gateway/telemetry"
CONNECT = "v1/gateway/connect"
WAIT = 10.0  # generous bound for a condition to become true; never an assertion on speed


class LoopbackSession:
    """Accepts publishes like a broker would: message ids, then PUBACKs (success unless told otherwise)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sent: list[tuple[str, bytes, int]] = []
        self.reasons: list[int] = []  # reason codes for the next QoS 1 publishes (then 0)
        self.hold = False  # True: keep PUBACKs back until release()
        self._held: dict[int, int] = {}
        self._acks: dict[int, int] = {}
        self._lost: str | None = None
        self._woken = False
        self._mid = 0

    @property
    def lost(self) -> str | None:
        return self._lost

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        with self.cond:
            if self._lost is not None:
                raise SessionLost(self._lost)
            self._mid = self._mid % 65535 + 1
            self.sent.append((topic, payload, qos))
            if qos:
                reason = self.reasons.pop(0) if self.reasons else 0
                (self._held if self.hold else self._acks)[self._mid] = reason
            self.cond.notify_all()
            return self._mid

    def take_acks(self) -> dict[int, int]:
        with self.cond:
            acks, self._acks = self._acks, {}
            return acks

    def wait(self, timeout: float) -> None:
        with self.cond:
            if not self._acks and self._lost is None and not self._woken:
                self.cond.wait(timeout)
            self._woken = False

    def wake(self) -> None:
        with self.cond:
            self._woken = True
            self.cond.notify_all()

    def release(self) -> None:
        with self.cond:
            self.hold = False
            self._acks.update(self._held)
            self._held.clear()
            self.cond.notify_all()

    def lose(self, why: str) -> None:
        with self.cond:
            self._lost = why
            self.cond.notify_all()

    def wait_sent(self, predicate: Callable[[list[tuple[str, bytes, int]]], bool]) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.sent), WAIT)


class RecordingHost:
    """The client's side of the sender: an outbox, counters, dead letters."""

    def __init__(self) -> None:
        self.outbox: list[Publish] = []
        self.counters: dict[str, int] = {}
        self.dead: list[DeadLetter] = []
        self.before: list[str] = []
        self.heartbeat = 0.0
        self.rate_limit_wait = 0.0
        self.puback_latency = Histogram()

    def take_rpc_replies(self) -> list[Publish]:
        out, self.outbox = self.outbox, []
        return out

    def remember_own(self, publish: Publish) -> None:
        self.before.append(publish.topic)

    def dead_letter(self, letters: list[DeadLetter]) -> None:
        self.dead.extend(letters)

    def count(self, key: str, amount: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + amount


def record(device: str, ts: int, value: float) -> bytes:
    return json.dumps({"device": device, "type": "Thermo",
                       "telemetry": [{"ts": ts, "values": {"t": value}}]}).encode()


def telemetry(sent: list[tuple[str, bytes, int]]) -> list[tuple[str, int]]:
    """(device, ts) of every telemetry entry published, in order."""
    return [(device, entry["ts"]) for topic, payload, _ in sent if topic == TELEMETRY
            for device, entries in json.loads(payload).items() for entry in entries]


def until(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def storage() -> Iterator[MemoryStorage]:
    store = MemoryStorage(SizeLimits(10_000, 10_000_000))
    yield store
    store.close()


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def sender(storage: MemoryStorage, host: RecordingHost) -> Sender:
    config = ThingsBoardConfig(min_reconnect_delay=0.01, max_reconnect_delay=0.02)
    return Sender(config, storage, KnownDevices(), host, logging.getLogger("test.sender"), read_batch=100)


class Running:
    """Sender.run on its own thread, as the client runs it; stop() asks it to stop and joins."""

    def __init__(self, sender: Sender, session: LoopbackSession) -> None:
        self.stop_event = threading.Event()
        self.session = session
        self.thread = threading.Thread(target=sender.run, args=(session, self.stop_event, self._deadline))
        self.thread.start()

    def _deadline(self) -> float:
        return time.monotonic() + 2.0

    def stop(self) -> None:
        self.stop_event.set()
        self.session.wake()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def test_events_leave_storage_only_once_their_puback_arrived(sender: Sender, storage: MemoryStorage,
                                                             host: RecordingHost) -> None:
    session = LoopbackSession()
    session.hold = True
    storage.put([record("A", ts, ts) for ts in range(1, 6)])
    running = Running(sender, session)
    try:
        assert session.wait_sent(lambda sent: len(telemetry(sent)) == 5)
        assert telemetry(session.sent) == [("A", ts) for ts in range(1, 6)]
        assert session.sent[0][0] == CONNECT  # the device is announced before its first data
        assert storage.count() == 5  # published, not acknowledged: still stored
        session.release()
        assert until(lambda: storage.count() == 0)
    finally:
        running.stop()
    assert host.counters["acked"] == host.counters["published"] == len(session.sent)
    assert host.before == [topic for topic, _, _ in session.sent]


def test_queued_replies_go_out_before_stored_events(sender: Sender, storage: MemoryStorage,
                                                    host: RecordingHost) -> None:
    host.outbox.append(rpc_reply_publish("A", 7, {"ok": True}))
    storage.put([record("A", 1, 1.0)])
    session = LoopbackSession()
    running = Running(sender, session)
    try:
        assert until(lambda: storage.count() == 0)
    finally:
        running.stop()
    assert [topic for topic, _, _ in session.sent] == ["v1/gateway/rpc", CONNECT, TELEMETRY]


def test_a_hopeless_rejection_is_dead_lettered_and_the_rest_delivered(sender: Sender, storage: MemoryStorage,
                                                                      host: RecordingHost) -> None:
    session = LoopbackSession()
    session.reasons = [0, 0x87]  # connect accepted, first telemetry publish "not authorized"
    storage.put([record("A", 1, 1.0)])
    running = Running(sender, session)
    try:
        assert until(lambda: storage.count() == 0)
        storage.put([record("A", 2, 2.0)])
        assert until(lambda: storage.count() == 0 and len(telemetry(session.sent)) == 2)
    finally:
        running.stop()
    assert [letter.reason for letter in host.dead] == ["rejected by ThingsBoard: reason 0x87"]
    assert host.counters["rejected"] == 1


def test_a_retryable_rejection_resends_from_the_oldest_stored_event(sender: Sender, storage: MemoryStorage,
                                                                    host: RecordingHost) -> None:
    session = LoopbackSession()
    session.reasons = [0, 0x97]  # connect accepted, the telemetry publish over quota
    storage.put([record("A", 1, 1.0)])
    running = Running(sender, session)
    try:
        assert until(lambda: storage.count() == 0)
    finally:
        running.stop()
    assert telemetry(session.sent) == [("A", 1), ("A", 1)]
    assert [topic for topic, _, _ in session.sent] == [CONNECT, TELEMETRY, CONNECT, TELEMETRY]
    assert host.dead == []


def test_a_lost_session_keeps_unacknowledged_events_for_the_next(sender: Sender, storage: MemoryStorage,
                                                                 host: RecordingHost) -> None:
    first = LoopbackSession()
    first.hold = True
    storage.put([record("A", 1, 1.0), record("B", 2, 2.0)])
    running = Running(sender, first)
    assert first.wait_sent(lambda sent: len(telemetry(sent)) == 2)
    first.lose("connection reset")
    running.thread.join(WAIT)
    assert not running.thread.is_alive()  # run() returns on its own when the session is lost
    assert storage.count() == 2

    second = LoopbackSession()
    running = Running(sender, second)
    try:
        assert until(lambda: storage.count() == 0)
    finally:
        running.stop()
    connects = [json.loads(p)["device"] for topic, p, _ in second.sent if topic == CONNECT]
    assert sorted(connects) == ["A", "B"]  # known devices are announced again in the new session
    assert telemetry(second.sent) == [("A", 1), ("B", 2)]
    assert host.counters["duplicates_resent"] == 2


def test_inactivity_disconnects_only_silent_devices_and_does_not_reannounce_them(
        storage: MemoryStorage, host: RecordingHost) -> None:
    from gateway.config.model import DeviceActivityConfig
    from gateway.northbound.activity import DeviceActivity

    config = ThingsBoardConfig(min_reconnect_delay=0.01, max_reconnect_delay=0.02,
                               device_activity=DeviceActivityConfig(enabled=True, timeout=100.0, check_period=0.01))
    activity = DeviceActivity()
    activity.posted(["A"], "REST", now=time.monotonic() - 1000)  # last posted long ago (its backlog is late)
    activity.posted(["B"], "REST")
    known = KnownDevices()
    sender = Sender(config, storage, known, host, logging.getLogger("test.sender"), activity=activity)
    storage.put([record("A", 1, 1.0), record("B", 1, 1.0)])
    session = LoopbackSession()
    running = Running(sender, session)
    try:
        assert session.wait_sent(lambda sent: any(topic == "v1/gateway/disconnect" for topic, _, _ in sent))
        assert until(lambda: storage.count() == 0)
    finally:
        running.stop()
    topics = [(topic, json.loads(payload).get("device")) for topic, payload, _ in session.sent
              if topic in (CONNECT, "v1/gateway/disconnect")]
    assert topics == [(CONNECT, "A"), (CONNECT, "B"), ("v1/gateway/disconnect", "A")]
    assert sorted(telemetry(session.sent)) == [("A", 1), ("B", 1)]  # its data went first
    assert host.counters["devices_disconnected"] == 1 and activity.devices() == {"B": "REST"}

    again = LoopbackSession()  # a reconnect: only the active device is announced again
    running = Running(sender, again)
    try:
        assert again.wait_sent(lambda sent: any(topic == CONNECT for topic, _, _ in sent))
    finally:
        running.stop()
    assert [json.loads(payload)["device"] for topic, payload, _ in again.sent if topic == CONNECT] == ["B"]
