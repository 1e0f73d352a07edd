"""Endpoint security: HTTP Basic credentials checked in constant time, or anonymous access."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from connectors.rest.model import Security


class BasicAuthenticator:
    """Checks an ``Authorization`` header against one endpoint's basic credentials.

    Both the username and the password are always compared, through SHA-256 digests with
    ``hmac.compare_digest``, so a wrong password and an unknown user take the same path and
    the same time whatever their lengths. Malformed headers and other schemes are rejected,
    never raised.
    """

    __slots__ = ("_user_digest", "_password_digest")

    def __init__(self, security: Security) -> None:
        self._user_digest = _digest(security.username.encode("utf-8"))
        self._password_digest = _digest(security.password.encode("utf-8"))

    def check(self, authorization: str | None) -> bool:
        """True when ``authorization`` carries this endpoint's username and password."""
        username, password = _parse_basic(authorization)
        user_ok = hmac.compare_digest(_digest(username), self._user_digest)
        password_ok = hmac.compare_digest(_digest(password), self._password_digest)
        return user_ok & password_ok & (authorization is not None)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _parse_basic(header: str | None) -> tuple[bytes, bytes]:
    """The (username, password) of a Basic header; a value that never matches when malformed."""
    never = (b"\x00invalid", b"\x00invalid")
    if not header:
        return never
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return never
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return never
    username, sep, password = decoded.partition(b":")
    if not sep:
        return never
    return username, password
