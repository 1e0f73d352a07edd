"""``Idempotency-Key`` (IETF httpapi draft) on mapping endpoints: a retried request gets its first answer.

A request with the header on a mapping with an ``idempotency`` section is looked up by its key in
its *scope*: the endpoint and the credential it authenticated with (a digest of its
``Authorization`` header; anonymous and hmac endpoints have one credential per endpoint). Then:

* no receipt (or an expired one): the request is processed; if its data is stored, the answer is
  stored with it as a :class:`~gateway.receipts.Receipt`, in the same transaction;
* a receipt of the same request (method, path, query and body): its status and body are sent again,
  with ``Idempotent-Replayed: true``, and nothing is stored;
* a receipt of a different request: 422, as the draft says;
* the same key still being processed by another request: 409 with ``Retry-After``.

Only answers of stored data are remembered: a request refused (400, 429, 503...) stored nothing
and may be retried with the same key. A malformed key is a 400.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass

from flask import Response
from werkzeug.wrappers import Request

from connectors.base import Uplink, UplinkUnavailable
from connectors.rest.model import IdempotencySettings
from connectors.rest.responses import error_response
from gateway.receipts import Receipt

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
#: printable ASCII without '"' and '\\': an sf-string's characters (the draft's type) less its escapes
_KEY = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,255}")


@dataclass(frozen=True, slots=True)
class Claim:
    """A request that holds its key while it is processed."""

    scope: str
    key: str
    fingerprint: bytes


class IdempotencyKeys:
    """The keys of one mapping endpoint: lookups, replays and the receipts of stored requests."""

    def __init__(self, settings: IdempotencySettings, endpoint: str, uplink: Uplink) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.uplink = uplink
        self._in_flight: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def claim(self, request: Request, body: bytes) -> Claim | Response | None:
        """``None`` without the header; else the answer to send now, or the :class:`Claim` to process under.

        A claim must be given back with :meth:`release` once the request is answered.
        """
        raw = request.headers.get(HEADER)
        if raw is None:
            return None
        key = parse_key(raw)
        if key is None:
            return error_response(400, f"{HEADER} must be 1-255 printable ASCII characters, optionally in "
                                  "double quotes (a structured-header string), without '\"' or '\\' inside")
        scope = f"{self.endpoint}\n{credential(request)}"
        fingerprint = request_fingerprint(request, body)
        with self._lock:
            if (scope, key) in self._in_flight:
                return error_response(409, f"a request with this {HEADER} is still being processed; "
                                      "retry when it is answered", {"Retry-After": "1"})
            self._in_flight.add((scope, key))
        try:
            found = self.uplink.find_receipt(scope, key)
        except UplinkUnavailable as exc:
            self.release(Claim(scope, key, fingerprint))
            return error_response(503, exc.reason, {"Retry-After": str(exc.retry_after)})
        except BaseException:
            self.release(Claim(scope, key, fingerprint))
            raise
        if found is None:
            return Claim(scope, key, fingerprint)
        self.release(Claim(scope, key, fingerprint))
        if found.fingerprint != fingerprint:
            return error_response(422, f"this {HEADER} was already used for a different request to "
                                  f"{self.endpoint} (another body, path or method); use a new key")
        answer = Response(found.body, status=found.status, content_type=found.content_type)
        answer.headers[REPLAYED] = "true"
        return answer

    def receipt(self, claim: Claim, answer: Response) -> Receipt:
        """The receipt to store with the data of ``claim``'s request, which will be answered ``answer``."""
        return Receipt(claim.scope, claim.key, claim.fingerprint, answer.status_code, answer.get_data(),
                       answer.content_type or "application/json", time.time() + self.settings.window_seconds,
                       self.settings.max_keys)

    def release(self, claim: Claim) -> None:
        """The request of ``claim`` is answered: its key may be used again."""
        with self._lock:
            self._in_flight.discard((claim.scope, claim.key))


def parse_key(raw: str) -> str | None:
    """The key of an ``Idempotency-Key`` header (quoted or bare), or ``None`` when malformed."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text if _KEY.fullmatch(text) else None


def credential(request: Request) -> str:
    """Who the request authenticated as, for the key's scope: a digest, never the credential itself."""
    authorization = request.headers.get("Authorization")
    if not authorization:
        return ""
    return hashlib.sha256(authorization.strip().encode("utf-8", "surrogateescape")).hexdigest()[:32]


def request_fingerprint(request: Request, body: bytes) -> bytes:
    """A digest of what makes two requests the same: method, path, query string and the body as received."""
    digest = hashlib.sha256()
    for part in (request.method.encode("ascii", "replace"), request.path.encode("utf-8", "surrogateescape"),
                 request.query_string, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()
