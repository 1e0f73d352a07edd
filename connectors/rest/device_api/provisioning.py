"""Device provisioning as ThingsBoard answers it: SUCCESS with a token, NOT_FOUND, or FAILURE."""
from __future__ import annotations

import hmac
import secrets
import string
from typing import Any

from connectors.rest.device_api.model import ProvisioningConfig
from connectors.rest.device_api.payloads import BadPayload
from connectors.rest.device_api.registry import TokenRegistry

NOT_FOUND = {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
FAILURE = {"errorMsg": "Failed to provision device!", "status": "FAILURE"}
_ALPHABET = string.ascii_letters + string.digits


def random_text(length: int = 20) -> str:
    """A random alphanumeric string (ThingsBoard's generated tokens and names are 20 characters)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def provision(request: Any, config: ProvisioningConfig | None, registry: TokenRegistry) -> dict[str, Any]:
    """Answer one provision request. Raises BadPayload for a missing key or secret (HTTP 400).

    May raise RegistryFailure when the registry cannot be written.
    """
    if not isinstance(request, dict):
        raise BadPayload("the provision request must be a JSON object")
    key, secret = request.get("provisionDeviceKey"), request.get("provisionDeviceSecret")
    for name, value in (("provisionDeviceKey", key), ("provisionDeviceSecret", secret)):
        if not isinstance(value, str):
            raise BadPayload(f"{name} is missing or not a string")
    if config is None or not (_equal(key, config.key) & _equal(secret, config.secret)):
        return dict(NOT_FOUND)
    credentials_type = request.get("credentialsType", "ACCESS_TOKEN")
    if credentials_type not in (None, "ACCESS_TOKEN"):
        return dict(FAILURE)  # MQTT_BASIC and X509 credentials mean nothing to an HTTP-only gateway
    name = request.get("deviceName")
    if name is None or name == "":
        name = random_text()
    if not isinstance(name, str) or not name.strip():
        return dict(FAILURE)
    token = request.get("token")
    if token is None or token == "":
        token = random_text()
    if not isinstance(token, str) or "/" in token or token != token.strip():
        return dict(FAILURE)
    if not registry.add(token, name, config.device_type):
        return dict(FAILURE)
    return {"credentialsValue": token, "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}
