"""The relay's deadline watchdog: one thread cuts sockets at their deadline; the relay bounds each try."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from connectors.rest.downlink.model import RequestOptions
from connectors.rest.downlink.relay import Relay
from connectors.rest.downlink.watchdog import Watch, Watchdog
from tests.fixtures.bad_http_target import BadHttpTargets
from tests.fixtures.http_target import HttpTarget


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog(name="test-watchdog")
    yield dog
    dog.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def watchdog_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def wait_fired(watch: Watch, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not watch.fired and time.monotonic() < end:
        time.sleep(0.01)
    return watch.fired


def test_a_deadline_shuts_the_attached_socket_down(watchdog, pair):
    left, _ = pair
    left.settimeout(30)
    watch = watchdog.arm(time.monotonic() + 0.1)
    watchdog.attach(watch, left)
    assert left.recv(10) == b""  # the blocked read ends: the socket was shut down, not the 30 s timeout
    assert watchdog.disarm(watch) is True


def test_a_disarmed_watch_never_fires(watchdog, pair):
    left, right = pair
    watch = watchdog.arm(time.monotonic() + 0.05)
    watchdog.attach(watch, left)
    assert watchdog.disarm(watch) is False
    later = watchdog.arm(time.monotonic() + 0.1)  # fires after the first deadline has passed
    assert wait_fired(later)
    right.sendall(b"still open")
    left.settimeout(5)
    assert left.recv(10) == b"still open"
    assert not watch.fired and watchdog.disarm(watch) is False


def test_a_socket_attached_after_the_deadline_is_shut_down_at_once(watchdog, pair):
    left, _ = pair
    watch = watchdog.arm(time.monotonic() - 1)
    assert wait_fired(watch)
    watchdog.attach(watch, left)
    left.settimeout(30)
    assert left.recv(10) == b""
    assert watchdog.disarm(watch) is True


def test_an_earlier_deadline_armed_later_wakes_the_thread(watchdog):
    late = watchdog.arm(time.monotonic() + 60)
    time.sleep(0.05)  # the thread now sleeps until the late deadline
    early = watchdog.arm(time.monotonic() + 0.05)
    assert wait_fired(early) and not late.fired
    assert watchdog.armed == 1
    assert watchdog.disarm(late) is False and watchdog.armed == 0


def test_live_watches_survive_the_compaction_of_cancelled_ones(watchdog):
    live = watchdog.arm(time.monotonic() + 0.2)
    for _ in range(1000):  # many finished tries: compacted away, never all kept
        watchdog.disarm(watchdog.arm(time.monotonic() + 60))
    assert watchdog.armed == 1
    assert wait_fired(live) and watchdog.disarm(live) is True


def test_one_thread_started_lazily_and_ended_by_close():
    dog = Watchdog(name="test-watchdog-lazy")
    assert watchdog_threads("test-watchdog-lazy") == []
    watches = [dog.arm(time.monotonic() + 30) for _ in range(50)]
    assert len(watchdog_threads("test-watchdog-lazy")) == 1
    dog.close()
    assert watchdog_threads("test-watchdog-lazy") == []
    inert = dog.arm(time.monotonic() - 1)  # after close: never fires, starts no thread
    time.sleep(0.05)
    assert not inert.fired and watchdog_threads("test-watchdog-lazy") == []
    assert not any(w.fired for w in watches)


def test_relay_bounds_a_whole_try_against_a_trickling_target():
    """A header line every 0.1 s never lets a read time out; the try still ends at its timeout."""
    targets = BadHttpTargets(drip_interval=0.1, max_seconds=20).start()
    relay = Relay()
    try:
        options = RequestOptions(method="POST", timeout=0.3, tries=2)
        started = time.monotonic()
        outcome = relay.send(targets.url("drip") + "/fw/D1", options, b"{}")
        elapsed = time.monotonic() - started
        assert outcome.kind == "timeout" and outcome.tries == 2
        assert elapsed < 10, elapsed  # not the target's 20 s of header lines per try
        assert targets.connections("drip") == 2
    finally:
        relay.close()
        targets.close()


def test_relay_reuses_keep_alive_connections_and_leaves_no_thread():
    target = HttpTarget().start()
    relay = Relay()
    try:
        options = RequestOptions(method="POST", headers=(("Content-Type", "application/json"),), timeout=2.0)
        for number in range(20):  # each try arms and disarms a watch on the same pooled socket
            outcome = relay.send(f"{target.url}/echo/D{number}", options, b'{"n": %d}' % number,
                                 time.monotonic() + 5)
            assert outcome.ok and outcome.body == b'{"n": %d}' % number, outcome
        assert len(watchdog_threads("rgw-relay-watchdog")) >= 1
    finally:
        relay.close()
        target.close()
