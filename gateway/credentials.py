"""Basic-auth credentials checked in constant time; used by the admin listener and the REST connector."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

#: a value no digest comparison ever matches (what malformed headers are turned into)
NEVER = b"\x00never-matches\x00"


def digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def parse_basic(header: str | None) -> tuple[bytes, bytes]:
    """The (username, password) of a Basic header; a value that never matches when malformed."""
    never = (NEVER, NEVER)
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


class BasicCredentials:
    """One username and password. Both are always compared, through SHA-256 digests with
    ``hmac.compare_digest``, so a wrong password and an unknown user take the same path and the same
    time whatever their lengths. Malformed headers and other schemes are rejected, never raised."""

    __slots__ = ("_user_digest", "_password_digest")

    def __init__(self, username: str, password: str) -> None:
        self._user_digest = digest(username.encode("utf-8"))
        self._password_digest = digest(password.encode("utf-8"))

    def check(self, authorization: str | None) -> bool:
        """True when ``authorization`` carries this username and password."""
        username, password = parse_basic(authorization)
        user_ok = hmac.compare_digest(digest(username), self._user_digest)
        password_ok = hmac.compare_digest(digest(password), self._password_digest)
        return user_ok & password_ok & (authorization is not None)
