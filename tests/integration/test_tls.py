"""TlsFront in front of a real waitress server, exercised with real HTTPS clients."""
from __future__ import annotations

import gc
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask, Response, request
from waitress import wasyncore
from waitress.server import create_server

from connectors.rest.tls import TlsConfigError, TlsFront
from tests.fixtures.certs import write_cert

BIG = 1024 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return write_cert(tmp_path_factory.mktemp("tls"), "server")


# -- a real waitress server ----------------------------------------------------------------------

def make_app(release: threading.Event, arrived: threading.Event) -> Flask:
    app = Flask("tls-test")

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"scheme": request.scheme, "remote": str(request.remote_addr),
                "remote_port": str(request.environ.get("REMOTE_PORT"))}

    @app.post("/echo")
    def echo() -> dict[str, object]:
        body = request.get_data()
        return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @app.get("/big")
    def big() -> Response:
        return Response(b"z" * BIG, mimetype="application/octet-stream")

    @app.get("/slow")
    def slow() -> str:
        arrived.set()
        release.wait(10)
        return "done"

    return app


class Backend:
    """waitress on a unix socket or an ephemeral loopback port, run in a thread."""

    def __init__(self, unix: bool) -> None:
        self.release, self.arrived = threading.Event(), threading.Event()
        self._dir = tempfile.mkdtemp(prefix="tlsw") if unix else None
        kwargs: dict[str, object] = (
            {"unix_socket": os.path.join(self._dir, "w.sock"), "unix_socket_perms": "600"}
            if self._dir else {"host": "127.0.0.1", "port": 0})
        self.server = create_server(make_app(self.release, self.arrived), threads=8, url_scheme="https",
                                    channel_timeout=30, **kwargs)
        self.address: tuple[str, int] | str = (
            str(kwargs["unix_socket"]) if self._dir else ("127.0.0.1", int(self.server.effective_port)))
        self._thread = threading.Thread(target=self.server.run, name="test-waitress")
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.task_dispatcher.shutdown(timeout=5)
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="module", params=["unix", "tcp"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    server = Backend(unix=request.param == "unix")
    yield server
    server.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if "backend" in request.fixturenames:  # a module-scoped backend may be created for this test: not a leak
        request.getfixturevalue("backend")
    threads, fds = set(threading.enumerate()), _open_fds()
    yield
    gc.collect()  # a finished requests response may still hold its socket until collected
    leaked = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
    # the module-scoped backend closes its side of a connection on its own thread, once it sees the
    # front's close: give it a moment under load before calling an fd leaked
    deadline = time.monotonic() + 2.0
    while (new := _open_fds() - fds) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not new, f"file descriptors left open: {[(fd, _describe_fd(fd)) for fd in sorted(new)]}"


def _describe_fd(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def front(certs: tuple[str, str], backend: Backend) -> Iterator[TlsFront]:
    tls = TlsFront("127.0.0.1", 0, *certs, backend=backend.address, handshake_timeout=5.0)
    tls.start()
    yield tls
    tls.close()


def url(front: TlsFront, path: str) -> str:
    return f"https://localhost:{front.port}{path}"


def client_context(certs: tuple[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs[0])


# -- behaviour -----------------------------------------------------------------------------------

def test_get_and_post_reach_waitress_as_https(front: TlsFront, certs: tuple[str, str]) -> None:
    with requests.Session() as session:
        hello = session.get(url(front, "/hello"), verify=certs[0], timeout=10)
        assert hello.status_code == 200
        assert hello.json()["scheme"] == "https"
        assert hello.json()["remote"] in ("127.0.0.1", "localhost")
        body = os.urandom(BIG)
        echo = session.post(url(front, "/echo"), data=body, verify=certs[0], timeout=30)
        assert echo.json() == {"length": BIG, "sha256": hashlib.sha256(body).hexdigest()}
        big = session.get(url(front, "/big"), verify=certs[0], timeout=30)
        assert big.content == b"z" * BIG


def test_slow_reader_gets_the_whole_response(front: TlsFront, certs: tuple[str, str]) -> None:
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # forces back-pressure in the front
    raw.connect(("127.0.0.1", front.port))
    with client_context(certs).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.settimeout(10)
        tls.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        threading.Event().wait(0.3)  # let the response pile up while nobody reads
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"z" * BIG


def test_keep_alive_connection_is_reused(front: TlsFront, certs: tuple[str, str], backend: Backend) -> None:
    conn = http.client.HTTPSConnection("localhost", front.port, context=client_context(certs), timeout=10)
    try:
        ports, socks = [], []
        for _ in range(3):
            conn.request("GET", "/hello")
            response = conn.getresponse()
            assert response.status == 200
            ports.append(json.loads(response.read())["remote_port"])
            socks.append(conn.sock)
        assert socks[0] is not None and all(s is socks[0] for s in socks)
        if isinstance(backend.address, tuple):  # one relay connection to waitress served all three
            assert len(set(ports)) == 1 and ports[0] != "None"
    finally:
        conn.close()


def test_twenty_concurrent_clients(front: TlsFront, certs: tuple[str, str]) -> None:
    barrier = threading.Barrier(20)

    def one_client(index: int) -> tuple[int, int]:
        body = f"client-{index}".encode() * 1000
        with requests.Session() as session:
            barrier.wait(10)
            posted = session.post(url(front, "/echo"), data=body, verify=certs[0], timeout=30)
            got = session.get(url(front, "/hello"), verify=certs[0], timeout=30)
        assert posted.json()["sha256"] == hashlib.sha256(body).hexdigest()
        return posted.status_code, got.status_code

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one_client, range(20)))
    assert results == [(200, 200)] * 20


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_plain_http_client_gets_a_closed_connection(front: TlsFront, certs: tuple[str, str]) -> None:
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as plain:
        plain.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = _read_until_closed(plain)  # a timeout here would mean the front hangs
    assert not answer.startswith(b"HTTP/")
    assert requests.get(url(front, "/hello"), verify=certs[0], timeout=10).status_code == 200


def test_client_that_never_handshakes_neither_blocks_others_nor_stays(
        certs: tuple[str, str], backend: Backend) -> None:
    tls = TlsFront("127.0.0.1", 0, *certs, backend=backend.address, handshake_timeout=0.5)
    tls.start()
    try:
        with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as silent:
            with requests.Session() as session:
                for _ in range(3):
                    assert session.get(url(tls, "/hello"), verify=certs[0], timeout=10).status_code == 200
            assert _read_until_closed(silent) == b""  # dropped after the handshake timeout
    finally:
        tls.close()


def test_connection_limit_queues_new_clients_until_a_slot_frees(
        certs: tuple[str, str], backend: Backend) -> None:
    tls = TlsFront("127.0.0.1", 0, *certs, backend=backend.address, connection_limit=2,
                   handshake_timeout=1.0)
    tls.start()
    try:
        silent = [socket.create_connection(("127.0.0.1", tls.port), timeout=10) for _ in range(2)]
        try:
            # both slots are held by silent clients; this one is served once they time out
            assert requests.get(url(tls, "/hello"), verify=certs[0], timeout=20).status_code == 200
        finally:
            for sock in silent:
                sock.close()
    finally:
        tls.close()


def test_close_finishes_in_flight_request_and_drops_idle_keep_alive(
        certs: tuple[str, str], backend: Backend) -> None:
    tls = TlsFront("127.0.0.1", 0, *certs, backend=backend.address)
    tls.start()
    port = tls.port
    backend.arrived.clear()
    backend.release.clear()
    idle = http.client.HTTPSConnection("localhost", port, context=client_context(certs), timeout=10)
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            outcome.append(requests.get(url(tls, "/slow"), verify=certs[0], timeout=20).text)
        except requests.RequestException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_request)
    try:
        idle.request("GET", "/hello")
        assert idle.getresponse().read()
        worker.start()
        assert backend.arrived.wait(10)
        closer = threading.Thread(target=tls.close, kwargs={"timeout": 10.0})
        closer.start()
        backend.release.set()
        closer.join(20)
        worker.join(20)
        assert not closer.is_alive()
        assert outcome == ["done"]
        assert idle.sock is not None and _read_until_closed(idle.sock) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        idle.close()
        tls.close()


def test_unreachable_backend_closes_the_client_but_front_survives(
        certs: tuple[str, str], tmp_path: Path) -> None:
    tls = TlsFront("127.0.0.1", 0, *certs, backend=str(tmp_path / "nobody-listens.sock"))
    tls.start()
    try:
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                requests.get(url(tls, "/hello"), verify=certs[0], timeout=10)
    finally:
        tls.close()


def test_port_taken_raises_oserror(certs: tuple[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        tls = TlsFront("127.0.0.1", taken.getsockname()[1], *certs, backend=("127.0.0.1", 9))
        with pytest.raises(OSError):
            tls.start()
        tls.close()


# -- configuration errors --------------------------------------------------------------------------

def test_missing_cert_file_is_named(tmp_path: Path, certs: tuple[str, str]) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(TlsConfigError, match="nope.crt"):
        TlsFront("127.0.0.1", 0, missing, certs[1], backend=("127.0.0.1", 9))
    with pytest.raises(TlsConfigError, match="missing.key"):
        TlsFront("127.0.0.1", 0, certs[0], str(tmp_path / "missing.key"), backend=("127.0.0.1", 9))


def test_garbage_cert_and_mismatched_key_are_named(tmp_path: Path, certs: tuple[str, str]) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match="garbage.crt.*no PEM certificate"):
        TlsFront("127.0.0.1", 0, str(garbage), certs[1], backend=("127.0.0.1", 9))
    _, other_key = write_cert(tmp_path, "other")
    with pytest.raises(TlsConfigError, match="other.key.*matching certificate"):
        TlsFront("127.0.0.1", 0, certs[0], other_key, backend=("127.0.0.1", 9))


def test_encrypted_key_is_refused_without_prompting(tmp_path: Path) -> None:
    cert, key = write_cert(tmp_path, "locked", passphrase=b"s3cret-pass")
    with pytest.raises(TlsConfigError, match="locked.key.*encrypted") as raised:
        TlsFront("127.0.0.1", 0, cert, key, backend=("127.0.0.1", 9))
    assert "s3cret" not in str(raised.value)


def test_home_directory_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    certs: tuple[str, str]) -> None:
    (tmp_path / "ssl").mkdir()
    shutil.copy(certs[0], tmp_path / "ssl" / "cert.pem")
    shutil.copy(certs[1], tmp_path / "ssl" / "key.pem")
    monkeypatch.setenv("HOME", str(tmp_path))
    TlsFront("127.0.0.1", 0, "~/ssl/cert.pem", "~/ssl/key.pem", backend=("127.0.0.1", 9)).close()


# -- the documented configurations ----------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "https.md"


def documented_configs() -> list[str]:
    return re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_docs_show_both_formats() -> None:
    configs = [json.loads(text) for text in documented_configs()]
    assert any("server" in c for c in configs) and any("SSL" in c for c in configs)


@pytest.mark.parametrize("index", range(len(documented_configs())))
def test_documented_config_loads_and_serves_https(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  backend: Backend) -> None:
    from connectors.rest.config import read_rest_config

    text = documented_configs()[index]
    data = json.loads(text)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rest_json = tmp_path / "conf" / "rest.json"
    rest_json.parent.mkdir()
    rest_json.write_text(text, encoding="utf-8")
    security = (data.get("server") or data)["security"]
    for_paths = [os.path.join(rest_json.parent, os.path.expanduser(security[k])) for k in ("cert", "key")]
    made_cert, made_key = write_cert(tmp_path, "doc")
    for made, wanted in zip((made_cert, made_key), for_paths, strict=True):
        os.makedirs(os.path.dirname(wanted), exist_ok=True)
        shutil.copy(made, wanted)
    config, problems = read_rest_config(str(rest_json))
    assert config is not None, problems.errors
    assert config.server.ssl
    tls = TlsFront("127.0.0.1", 0, config.server.cert, config.server.key, backend=backend.address)
    tls.start()
    try:
        got = requests.get(url(tls, "/hello"), verify=config.server.cert, timeout=10)
        assert got.json()["scheme"] == "https"
    finally:
        tls.close()
