"""The ``deviceApi`` section of rest.json, normalised: credentials, provisioning, firmware, limits, CoAP."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PATH = "/api/v1"
DEFAULT_POLL_TIMEOUT_MS = 60_000
DEFAULT_MAX_POLL_TIMEOUT_MS = 300_000
DEFAULT_MAX_CONCURRENT_POLLS = 256
DEFAULT_RPC_TTL_MS = 60_000
DEFAULT_CLIENT_RPC_TIMEOUT_MS = 60_000
DEFAULT_ATTRIBUTE_REQUEST_TIMEOUT_MS = 10_000
DEFAULT_MAX_PENDING_KEYS = 1000
DEFAULT_MAX_QUEUED_RPC = 100
REGISTRY_FILE = "device-api.db"
DEFAULT_COAP_PORT = 5683
DEFAULT_OBSERVE_CHECK_SECONDS = 120
DEFAULT_MAX_OBSERVATIONS = 10_000
DEFAULT_COAP_MAX_PAYLOAD = 65_000
DEFAULT_COAP_MAX_CONCURRENT = 256
#: RFC 7252 §4.8 transmission parameters of the gateway's own confirmable messages
DEFAULT_COAP_ACK_TIMEOUT = 2.0
DEFAULT_COAP_MAX_RETRANSMIT = 4


@dataclass(frozen=True, slots=True)
class CoapRateLimit:
    """A token bucket per source address: ``requests`` per ``per_seconds``, up to ``burst`` at once."""

    requests: int = 1000
    per_seconds: float = 1.0
    burst: int = 2000
    max_addresses: int = 10_000


@dataclass(frozen=True, slots=True)
class CoapConfig:
    """``deviceApi.coap``: ThingsBoard's CoAP device API over UDP."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = DEFAULT_COAP_PORT
    observe_check_seconds: int = DEFAULT_OBSERVE_CHECK_SECONDS
    max_observations: int = DEFAULT_MAX_OBSERVATIONS
    max_payload_bytes: int = DEFAULT_COAP_MAX_PAYLOAD
    max_concurrent_requests: int = DEFAULT_COAP_MAX_CONCURRENT
    ack_timeout_seconds: float = DEFAULT_COAP_ACK_TIMEOUT
    max_retransmit: int = DEFAULT_COAP_MAX_RETRANSMIT
    rate_limit: CoapRateLimit = CoapRateLimit()


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """One device of the local credentials registry."""

    access_token: str
    device_name: str
    device_type: str = "default"

    def __repr__(self) -> str:  # never print the token
        return f"DeviceCredentials(device_name={self.device_name!r}, device_type={self.device_type!r})"


@dataclass(frozen=True, slots=True)
class ProvisioningConfig:
    """The one provisioning profile: key and secret devices must present, and the new devices' type."""

    key: str
    secret: str
    device_type: str = "default"

    def __repr__(self) -> str:
        return f"ProvisioningConfig(device_type={self.device_type!r})"


@dataclass(frozen=True, slots=True)
class DeviceApiConfig:
    """Everything the device API needs; times are milliseconds as written in rest.json."""

    enabled: bool = False
    base_path: str = DEFAULT_BASE_PATH
    devices: tuple[DeviceCredentials, ...] = ()
    provisioning: ProvisioningConfig | None = None
    firmware_path: str = ""
    max_poll_timeout_ms: int = DEFAULT_MAX_POLL_TIMEOUT_MS
    max_concurrent_polls: int = DEFAULT_MAX_CONCURRENT_POLLS
    rpc_ttl_ms: int = DEFAULT_RPC_TTL_MS
    client_rpc_timeout_ms: int = DEFAULT_CLIENT_RPC_TIMEOUT_MS
    attribute_request_timeout_ms: int = DEFAULT_ATTRIBUTE_REQUEST_TIMEOUT_MS
    max_pending_keys: int = DEFAULT_MAX_PENDING_KEYS
    max_queued_rpc: int = DEFAULT_MAX_QUEUED_RPC
    coap: CoapConfig | None = None  # None: no CoAP transport
    pointer: str = "/deviceApi"

    def secrets(self) -> list[str]:
        """Every credential in this section, for log masking."""
        found = [d.access_token for d in self.devices]
        if self.provisioning is not None:
            found += [self.provisioning.key, self.provisioning.secret]
        return found
