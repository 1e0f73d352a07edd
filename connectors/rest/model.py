"""The REST connector's internal config model; both rest.json formats are read into it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.rest.device_api.model import DeviceApiConfig
from converters.config import ConverterConfig
from gateway.rate_limit import RequestRateLimit

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_RESPONSE_TIMEOUT_S = 120.0  # the reference's default for response.timeout
DEFAULT_MAX_WAITING_RESPONSES = 256


@dataclass(frozen=True, slots=True)
class HmacSettings:
    """An ``hmac`` endpoint's shared secret and where the signature and timestamp travel."""

    secret: str
    header: str = "X-Signature"
    timestamp_header: str = "X-Timestamp"
    algorithm: str = "sha256"  # "sha256" | "sha384" | "sha512"
    max_skew_seconds: int = 300
    replay_cache_size: int = 100_000

    def __repr__(self) -> str:  # never print the secret
        return f"HmacSettings(header={self.header!r}, algorithm={self.algorithm!r})"


@dataclass(frozen=True, slots=True)
class Security:
    """Who may call an endpoint (``anonymous``, ``basic``, ``bearer``, ``hmac``) or how the gateway calls a target."""

    type: str = "anonymous"  # "anonymous" | "basic" | "bearer" | "hmac" | "cert" (downlink only)
    username: str = ""
    password: str = ""
    cert: str = ""
    key: str = ""
    tokens: tuple[str, ...] = ()  # bearer: the accepted tokens (inline and from tokensFile)
    hmac: HmacSettings | None = None

    def secrets(self) -> list[str]:
        """Every credential of this security section, for log masking."""
        found = [self.password, *self.tokens]
        if self.hmac is not None:
            found.append(self.hmac.secret)
        return [s for s in found if s]

    def __repr__(self) -> str:  # never print secrets
        return f"Security(type={self.type!r}, username={self.username!r})"


@dataclass(frozen=True, slots=True)
class ResponseConfig:
    """A mapping's ``response`` section: configured bodies, and the optional wait for ThingsBoard's answer.

    ``success`` / ``unsuccessful`` are the configured bodies as written; ``has_*`` says whether the key
    is present (``null`` is a valid body).
    """

    success: Any = None
    unsuccessful: Any = None
    has_success: bool = False
    has_unsuccessful: bool = False
    expected: bool = False  # responseExpected: wait for the shared attribute ``attribute`` of the device
    attribute: str = ""
    timeout: float = DEFAULT_RESPONSE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    """A mapping's ``idempotency`` section: how long and how many ``Idempotency-Key`` answers are kept."""

    window_seconds: int = 86_400
    max_keys: int = 100_000


@dataclass(frozen=True, slots=True)
class Mapping:
    """One endpoint: its path, allowed methods, security and converter."""

    endpoint: str
    methods: tuple[str, ...]
    security: Security
    converter: ConverterConfig
    pointer: str = ""  # JSON pointer of this entry in the file, for messages
    rate_limit: RequestRateLimit | None = None
    response: ResponseConfig = ResponseConfig()
    report_strategy: dict[str, Any] | None = None  # the mapping's own reportStrategy as written
    idempotency: IdempotencySettings | None = None  # Idempotency-Key honoured (None: the header is ignored)


#: worker threads when rest.json sets no ``threads`` and a store waits for a disk commit (SQLite):
#: a waiting request holds its thread, so one commit groups at most this many requests (16 measured
#: 9 % slower at 64 connections than 32)
THREADS_WHEN_STORE_WAITS = 32
#: ... and when it does not (memory storage): requests only use the CPU, and more threads than this
#: leave waitress's I/O thread short of the GIL (+15-22 % at 64 connections against 32; docs/performance.md)
THREADS_WHEN_STORE_IS_IMMEDIATE = 16


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP server: bind address, TLS and the explicit resource limits."""

    host: str = "127.0.0.1"
    port: int = 5000
    ssl: bool = False
    cert: str = ""
    key: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    threads: int | None = None  # None: by storage, see threads_for (rest.json without "threads")
    max_waiting_responses: int = DEFAULT_MAX_WAITING_RESPONSES  # requests waiting for response.responseAttribute
    connection_limit: int = 1000
    channel_timeout: int = 30
    base_url: str = ""  # for relative downlink URLs; default: this server's own address
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For names the client (trustedProxies)

    def threads_for(self, store_waits: bool) -> int:
        """The worker threads to start: ``threads`` as written, else the default for the storage.

        ``store_waits``: storing an event waits for a disk commit (SQLite), holding the request's thread.
        """
        if self.threads is not None:
            return self.threads
        return THREADS_WHEN_STORE_WAITS if store_waits else THREADS_WHEN_STORE_IS_IMMEDIATE


@dataclass(frozen=True, slots=True)
class RestConfig:
    """A whole rest.json, normalised. ``format`` says which reader produced it."""

    file: str
    format: str  # "legacy" (rest-connector.md, flat) | "current" (server/requestsMapping)
    server: ServerConfig
    mappings: tuple[Mapping, ...]
    attribute_updates: tuple[dict[str, Any], ...] = ()
    server_side_rpc: tuple[dict[str, Any], ...] = ()
    attribute_requests: tuple[dict[str, Any], ...] = ()
    device_api: DeviceApiConfig | None = None  # the optional ThingsBoard HTTP device API (deviceApi)
    report_strategy: dict[str, Any] | None = None  # the connector's reportStrategy (top level), as written


def normalise_methods(entry: dict[str, Any], keys: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """The upper-cased, de-duplicated HTTP methods under the first of ``keys`` present (a string or a list)."""
    for key in keys:
        if key in entry:
            value = entry[key]
            items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            return tuple(dict.fromkeys(m.strip().upper() for m in items if isinstance(m, str) and m.strip()))
    return default
