"""The general gateway config model (config/gateway.yaml), mirroring the ThingsBoard IoT Gateway's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.rate_limit import RequestRateLimit


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS to the MQTT broker: CA file, optional client certificate and key."""

    ca_cert: str = ""
    cert: str = ""
    private_key: str = ""
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Self-imposed limits towards ThingsBoard (0 = none); ThingsBoard's own, when it tells, win."""

    messages_per_second: float = 0.0
    datapoints_per_second: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceActivityConfig:
    """``thingsboard.checkingDeviceActivity``: disconnect devices that stopped posting (off by default)."""

    enabled: bool = False  # checkDeviceInactivity
    timeout: float = 200.0  # inactivityTimeoutSeconds: idle this long means disconnected
    check_period: float = 10.0  # inactivityCheckPeriodSeconds: how often idle devices are looked for


@dataclass(frozen=True, slots=True)
class ThingsBoardConfig:
    """Where and how to reach ThingsBoard's MQTT gateway API."""

    host: str = "127.0.0.1"
    port: int = 1883
    access_token: str = ""
    username: str = ""
    password: str = ""
    client_id: str = ""
    tls: TlsConfig | None = None
    qos: int = 1
    protocol: str = "mqtt5"  # "mqtt5" | "mqtt311"
    keepalive: int = 60
    max_payload_bytes: int = 65536
    rate_limits: RateLimits = field(default_factory=RateLimits)
    min_reconnect_delay: float = 1.0
    max_reconnect_delay: float = 60.0
    send_linger_ms: float = 20.0  # under load, publishes of stored events at least this far apart
    device_activity: DeviceActivityConfig = field(default_factory=DeviceActivityConfig)
    #: remoteConfiguration: report the config to ThingsBoard and take connector/log level changes from it
    remote_configuration: bool = False
    #: ``reportStrategy`` as written (checked by the schema): the default of connectors and mappings without one
    report_strategy: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"ThingsBoardConfig(host={self.host!r}, port={self.port}, protocol={self.protocol!r})"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Event storage: ``sqlite`` (durable, default) or ``memory``, with its size limits."""

    type: str = "sqlite"
    data_file_path: str = "./data/gateway.db"
    max_records: int = 1_000_000
    max_size_mb: int = 1024
    read_batch: int = 1000
    rate_limit: RequestRateLimit | None = None  # requests accepted into storage, across all endpoints
    #: sqlite only: "power" (fsync per commit, survives a power cut) or "process" (survives a crash)
    durability: str = "power"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (metrics, health, readiness, status page); loopback-only by default."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9100
    threads: int = 4
    username: str = ""  # basic auth for /metrics and / when set (the probes stay open)
    password: str = ""
    max_ready_backlog: int = 10_000  # /readyz stays 200 without ThingsBoard up to this many stored events

    def __repr__(self) -> str:  # never print the password
        return f"AdminConfig(enabled={self.enabled}, host={self.host!r}, port={self.port})"


@dataclass(frozen=True, slots=True)
class StatisticsConfig:
    """The gateway device's own statistics telemetry to ThingsBoard (``statistics`` in gateway.yaml)."""

    enabled: bool = False
    period_seconds: int = 60  # statsSendPeriodInSeconds


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """How log records are written: ``text`` (one readable line) or ``json`` (one object per line)."""

    format: str = "text"


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    """Hot reload: with ``watch``, a change of gateway.yaml or a connector file on disk is applied."""

    watch: bool = False
    interval_s: float = 1.0  # how often the files are looked at (mtime, size, then content hash)


@dataclass(frozen=True, slots=True)
class ConnectorEntry:
    """One connector named in the general config."""

    name: str
    type: str
    configuration: str  # absolute path of the connector's config file


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole general config, with relative paths already resolved against its file."""

    file: str
    thingsboard: ThingsBoardConfig
    storage: StorageConfig
    connectors: tuple[ConnectorEntry, ...]
    log_level: str = "INFO"
    extension_paths: tuple[str, ...] = ()  # extra folders searched for custom converters
    admin: AdminConfig = field(default_factory=AdminConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    pid_file: str = ""  # where the running daemon writes its pid (default: beside the storage file)
    cpus: str | tuple[int, ...] = "auto"  # "auto", "all" or CPU numbers: see gateway.cpus
