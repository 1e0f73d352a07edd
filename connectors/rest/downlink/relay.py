"""The downlink HTTP client: one request to a target with tries, backoff, timeouts, auth and TLS options."""
from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.cookies import RequestsCookieJar, merge_cookies
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InsecureRequestWarning

from connectors.rest.downlink.model import RequestOptions
from connectors.rest.downlink.watchdog import Watchdog

#: the largest target response read (an RPC reply must fit one MQTT message anyway)
MAX_RESPONSE_BYTES = 1024 * 1024
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
_CACHE_SIZE = 4096  # prepared entries and URLs kept (the caches are emptied when full)
_DOT_MARK = "%252E"  # survives requests' re-quoting; turned back into %2E before sending
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")

# SSLVerify is false by default (as in the spec); the choice is logged once per entry at load instead
warnings.filterwarnings("ignore", category=InsecureRequestWarning)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of relaying one request, after all tries.

    ``kind`` is "ok" (2xx), "http" (another status), "timeout", "connection" or "invalid".
    """

    kind: str
    tries: int
    status: int = 0
    reason: str = ""
    body: bytes = b""
    content_type: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def describe(self) -> str:
        """One line for logs: ``HTTP 500 Internal Server Error`` or the failure reason."""
        if self.kind in ("ok", "http"):
            return f"HTTP {self.status} {self.reason}".rstrip()
        return self.reason


def _reason_phrase(response: requests.Response) -> str:
    if response.reason:
        return str(response.reason)
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return "HTTP error"


def _causes(exc: BaseException, depth: int = 0) -> list[BaseException]:
    """``exc`` and what it wraps (``requests`` and urllib3 nest the root cause in args and __context__)."""
    found = [exc]
    if depth < 5:
        for inner in (*exc.args, exc.__cause__, exc.__context__):
            if isinstance(inner, BaseException):
                found += _causes(inner, depth + 1)
    return found


def _short(exc: Exception, url: str) -> str:
    """The reason of a failed exchange, without echoing what the target sent."""
    host = urlsplit(url).netloc.rsplit("@", 1)[-1] or url
    causes = _causes(exc)
    if any(isinstance(c, http.client.IncompleteRead) for c in causes):
        return f"the response of {host} was cut short"
    if any(isinstance(c, http.client.HTTPException) and not isinstance(c, http.client.RemoteDisconnected)
           for c in causes):
        return f"{host} did not answer valid HTTP"
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return f"the connection to {host} was reset"
    text = str(exc)
    match = _ERRNO.search(text)
    cause = match.group(0).strip() if match else (type(exc).__name__ if len(text) > 200 or not text else text)
    return f"cannot connect to {host}: {cause}"


class _Watched:
    """Mixin for urllib3 connections: the try's watch (if any) gets each socket the connection uses."""

    sock: socket.socket | None
    current = threading.local()  # (watchdog, watch) of the try running on this thread, if any

    def _attach(self, sock: socket.socket | None) -> None:
        armed = getattr(_Watched.current, "armed", None)
        if armed is not None:
            armed[0].attach(armed[1], sock)

    def _new_conn(self):  # type: ignore[no-untyped-def]
        sock = super()._new_conn()  # type: ignore[misc]
        self._attach(sock)  # the plain TCP socket: a TLS handshake is cut too
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._attach(self.sock)  # the TLS socket replaces the plain one (which it detached)

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._attach(self.sock)  # a reused keep-alive connection (None for a new one: connect attaches)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """Connections whose sockets a :class:`Watchdog` can cut at a try's deadline."""

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


@dataclass(frozen=True, slots=True)
class _Parts:
    """What every request of one entry shares, built once: method, headers (merged with the session's
    defaults and validated, as ``Session.prepare_request`` does) and the auth object."""

    options: RequestOptions
    method: str
    headers: CaseInsensitiveDict[str]
    auth: HTTPBasicAuth | None

    @classmethod
    def of(cls, options: RequestOptions, session: requests.Session) -> _Parts:
        probe = requests.PreparedRequest()
        probe.prepare_headers(merge_setting(dict(options.headers), session.headers, dict_class=CaseInsensitiveDict))
        auth = HTTPBasicAuth(options.username, options.password) if options.username is not None else None
        return cls(options, options.method.upper(), probe.headers, auth)


class Relay:
    """Sends downlink requests with ``requests``; one Session per worker thread, all closed by :meth:`close`."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._stop = stop or threading.Event()
        self._watchdog = Watchdog()
        self._parts: dict[int, _Parts] = {}  # id(options) -> what every request of that entry shares
        self._urls: dict[str, str] = {}  # URL -> the URL requests sends (its quoting is costly)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # proxies and netrc from the environment would surprise a gateway
            session.mount("http://", _WatchedAdapter())
            session.mount("https://", _WatchedAdapter())
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, url: str, options: RequestOptions, body: bytes | None,
             deadline: float | None = None) -> Outcome:
        """Send with up to ``options.tries`` tries; retry connection errors, timeouts and 5xx.

        Each try (connect, send, response headers and body) ends after ``options.timeout`` in all,
        however the target trickles its bytes. ``deadline`` (a ``time.monotonic()`` value) bounds the
        whole exchange, backoff included.
        """
        last = Outcome("timeout", 0, reason="timeout")
        for attempt in range(1, options.tries + 1):
            timeout = options.timeout
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Outcome("timeout", attempt - 1, reason="timeout")
                timeout = min(timeout, remaining)
            last = self._once(url, options, body, timeout, attempt)
            retriable = last.kind in ("timeout", "connection") or (last.kind == "http" and last.status >= 500)
            if not retriable or attempt == options.tries:
                return last
            pause = min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX)
            if deadline is not None and time.monotonic() + pause >= deadline:
                return last if last.kind != "timeout" else Outcome("timeout", attempt, reason="timeout")
            if self._stop.wait(pause):
                return last
        return last

    def _once(self, url: str, options: RequestOptions, body: bytes | None, timeout: float,
              attempt: int) -> Outcome:
        """One try, cut by the watchdog ``timeout`` seconds from now whatever it is blocked in."""
        watch = self._watchdog.arm(time.monotonic() + timeout)
        _Watched.current.armed = (self._watchdog, watch)
        try:
            outcome = self._exchange(url, options, body, timeout, attempt)
        finally:
            _Watched.current.armed = None
            fired = self._watchdog.disarm(watch)
        if fired:  # cut short: even a "200" is an incomplete answer
            return Outcome("timeout", attempt, reason="timeout")
        return outcome

    def _exchange(self, url: str, options: RequestOptions, body: bytes | None, timeout: float,
                  attempt: int) -> Outcome:
        session = self._session()
        try:
            prepared = self._prepare(session, url, options, body)
            response = session.send(prepared, cert=options.cert, timeout=timeout, stream=True,
                                    allow_redirects=options.allow_redirects, verify=options.verify)
        except requests.Timeout:
            return Outcome("timeout", attempt, reason="timeout")
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader, ValueError) as exc:
            return Outcome("invalid", attempt, reason=f"invalid request to {url}: {exc}")
        except (requests.RequestException, OSError) as exc:
            return Outcome("connection", attempt, reason=_short(exc, url))
        try:
            chunks, size = [], 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    return Outcome("invalid", attempt, status=response.status_code,
                                   reason=f"the response of {url} is larger than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
        except requests.Timeout:
            return Outcome("timeout", attempt, reason="timeout")
        except (requests.RequestException, OSError) as exc:
            return Outcome("connection", attempt, reason=_short(exc, url))
        finally:
            response.close()
        kind = "ok" if 200 <= response.status_code < 300 else "http"
        return Outcome(kind, attempt, status=response.status_code, reason=_reason_phrase(response),
                       body=b"".join(chunks), content_type=response.headers.get("Content-Type", ""))

    def _prepare(self, session: requests.Session, url: str, options: RequestOptions,
                 body: bytes | None) -> requests.PreparedRequest:
        """What ``session.prepare_request`` makes, from the entry's parts prepared once (and URLs cached)."""
        parts = self._parts.get(id(options))
        if parts is None or parts.options is not options:
            parts = _Parts.of(options, session)
            if len(self._parts) >= _CACHE_SIZE:
                self._parts.clear()
            self._parts[id(options)] = parts
        prepared = requests.PreparedRequest()
        prepared.method = parts.method
        prepared.url = self._prepared_url(url)
        prepared.headers = parts.headers.copy()
        prepared.prepare_cookies(merge_cookies(RequestsCookieJar(), session.cookies))
        prepared.prepare_body(body, None)
        if parts.auth is not None or "@" in prepared.url:  # no auth: requests looks for user:pass@ only
            prepared.prepare_auth(parts.auth, prepared.url)
        return prepared

    def _prepared_url(self, url: str) -> str:
        prepared = self._urls.get(url)
        if prepared is None:
            # requests re-quotes URLs and would decode %2E (a "." or ".." value) back into a dot segment
            shielded = url.replace("%2E", _DOT_MARK)
            probe = requests.PreparedRequest()
            probe.prepare_url(shielded, None)
            prepared = (probe.url or shielded).replace(_DOT_MARK, "%2E")
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            self._urls[url] = prepared
        return prepared

    def close(self) -> None:
        """Close every session (their pooled connections) and end the watchdog thread."""
        self._watchdog.close()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
