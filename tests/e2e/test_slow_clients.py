"""Slow clients (slowloris) against the real daemon: they cost connections, never the service of others."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import requests

from tests.e2e.test_uplink import json_mapping

CONVERTER = {"deviceNameExpression": "${dev}", "deviceTypeExpression": "meter", "attributes": [],
             "timeseries": [{"type": "int", "key": "seq", "value": "${seq}"}]}
SLOW_HEAD = b"POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 4096


class SlowClients:
    """``count`` connections that each send one more byte of an endless request head every second."""

    def __init__(self, port: int, count: int, head: bytes = SLOW_HEAD) -> None:
        self.port, self.count, self.head = port, count, head
        self.sockets: list[socket.socket] = []
        self.closed_by_server = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, name="slowloris", daemon=True)

    def open(self) -> None:
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread.start()

    def _drip(self) -> None:
        position = 0
        while not self._stop.wait(1.0) and position < len(self.head):
            byte = self.head[position:position + 1]
            for sock in list(self.sockets):
                try:
                    sock.send(byte)
                    self.sent += 1
                except BlockingIOError:
                    continue
                except OSError:
                    self._drop(sock)
            position += 1
            for sock in list(self.sockets):  # a close or an answer from the server shows up as readable
                try:
                    if sock.recv(4096) == b"":
                        self._drop(sock)
                except BlockingIOError:
                    continue
                except OSError:
                    self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        self.sockets.remove(sock)
        sock.close()
        self.closed_by_server += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


@contextmanager
def slow_clients(port: int, count: int) -> Iterator[SlowClients]:
    clients = SlowClients(port, count)
    with ExitStack() as stack:
        stack.callback(clients.close)
        clients.open()
        yield clients


def normal_posts(url: str, count: int, device: str) -> list[int]:
    statuses = []
    with requests.Session() as session:
        for seq in range(count):
            statuses.append(session.post(url, json={"dev": device, "seq": seq}, timeout=15).status_code)
    return statuses


def test_two_hundred_slow_clients_do_not_starve_normal_ones(make_daemon, mqtt_subscriber):
    gw = make_daemon(json_mapping(CONVERTER))  # default limits: 32 threads, 1000 connections, 30 s
    with slow_clients(gw.port, 200) as slow:
        time.sleep(1.5)  # every slow connection has sent part of its head
        started = time.monotonic()
        statuses = normal_posts(gw.url("/data"), 40, "normal")
        # fresh connections too, not only the kept-alive session
        statuses += [requests.post(gw.url("/data"), json={"dev": "fresh", "seq": i}, timeout=15).status_code
                     for i in range(10)]
        elapsed = time.monotonic() - started
        assert len(slow.sockets) == 200, "the slow clients were still connected while others were served"
        assert slow.sent >= 200
    assert statuses == [200] * 50
    print(f"slow clients: 200 connections dripping 1 byte/s; 50 normal requests all answered 200 in {elapsed:.1f}s")
    assert gw.proc.poll() is None


def test_slow_heads_are_dropped_so_a_full_connection_table_frees_up(make_daemon):
    # a connection limit the slow clients fill completely: without a deadline on the request head,
    # nobody else would be accepted for as long as they keep dripping
    rest = json_mapping(CONVERTER)
    rest.update(connectionLimit=20, channelTimeout=2)
    gw = make_daemon(rest)
    with slow_clients(gw.port, 25) as slow:
        time.sleep(1.0)
        answer = requests.post(gw.url("/data"), json={"dev": "waiting", "seq": 1}, timeout=20)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 15
        while slow.sockets and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slow.closed_by_server == 25, "every slow request head was cut off"
    assert "request head not complete" in gw.log_text()


def test_idle_connections_are_closed_after_channel_timeout(make_daemon):
    rest = json_mapping(CONVERTER)
    rest.update(channelTimeout=2)
    gw = make_daemon(rest)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as idle:
        assert idle.recv(1) == b""  # closed by the server, not by our timeout (which would raise)
