"""Endpoint security: HTTP Basic or Bearer credentials checked in constant time, or anonymous access.

:func:`endpoint_authenticator` gives the authenticator of a mapping endpoint's ``security`` section
(``hmac`` lives in :mod:`connectors.rest.hmac_auth`); each answers a request with ``None`` (let in)
or the :class:`Refusal` to send.
"""
from __future__ import annotations

import hmac
from typing import NamedTuple, Protocol

from werkzeug.datastructures import Headers

from connectors.rest.model import Security
from gateway.credentials import NEVER, BasicCredentials, digest

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="rest-gateway", charset="UTF-8"'}
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rest-gateway"'}


class Refusal(NamedTuple):
    """Why a request is not let in: the status, the JSON error message and the extra headers."""

    status: int
    message: str
    headers: dict[str, str]


class Authenticator(Protocol):
    """Decides whether one request may reach an endpoint."""

    needs_body: bool  # the decision depends on the raw body (read before it)

    def refuse(self, headers: Headers, body: bytes) -> Refusal | None:
        """``None`` when the request is let in, else the answer to send."""
        ...

    def forget(self, headers: Headers, body: bytes) -> None:
        """A let-in request was not stored after all (only called when ``needs_body``)."""
        ...


def endpoint_authenticator(security: Security) -> Authenticator | None:
    """The authenticator of a mapping endpoint's ``security``; ``None`` for anonymous access."""
    if security.type == "basic":
        return BasicAuthenticator(security)
    if security.type == "bearer":
        return BearerAuthenticator(security)
    if security.type == "hmac":
        from connectors.rest.hmac_auth import HmacAuthenticator

        return HmacAuthenticator(security)
    return None


class BasicAuthenticator(BasicCredentials):
    """Checks an ``Authorization`` header against one endpoint's basic credentials, in constant time
    (see :class:`gateway.credentials.BasicCredentials`)."""

    __slots__ = ()
    needs_body = False

    def __init__(self, security: Security) -> None:
        super().__init__(security.username, security.password)

    def refuse(self, headers: Headers, body: bytes) -> Refusal | None:
        if self.check(headers.get("Authorization")):
            return None
        return Refusal(401, "authentication required: wrong or missing Basic credentials", BASIC_CHALLENGE)


class BearerAuthenticator:
    """Checks ``Authorization: Bearer <token>`` against every configured token.

    The presented token is hashed once (SHA-256) and compared with ``hmac.compare_digest`` to the
    digest of *every* configured token, the results OR-ed without an early exit, so the time taken
    says neither whether nor which token matched. A missing or malformed header (another scheme,
    no token, blanks inside, non-ASCII) compares a value that never matches, the same way.
    """

    __slots__ = ("_digests",)
    needs_body = False

    def __init__(self, security: Security) -> None:
        self._digests = tuple(digest(token.encode("utf-8")) for token in security.tokens)

    def check(self, authorization: str | None) -> bool:
        """True when ``authorization`` carries one of this endpoint's tokens."""
        presented = digest(_parse_bearer(authorization))
        matched = False
        for expected in self._digests:
            matched |= hmac.compare_digest(presented, expected)
        return matched

    def refuse(self, headers: Headers, body: bytes) -> Refusal | None:
        authorization = headers.get("Authorization")
        if self.check(authorization):
            return None
        what = "missing" if not authorization else "wrong or malformed"
        return Refusal(401, f"authentication required: {what} Bearer token", BEARER_CHALLENGE)


def _parse_bearer(header: str | None) -> bytes:
    """The token of a Bearer header (RFC 6750: one token, no blanks inside); a never-matching value else."""
    if not header:
        return NEVER
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return NEVER
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        return NEVER
