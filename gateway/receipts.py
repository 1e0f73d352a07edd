"""Receipts: the answer to a request, stored in the same transaction as the request's data (Idempotency-Key).

A connector that honours ``Idempotency-Key`` hands the storage, with the data, the answer it will send
once the data is stored. A retry with the same key finds that receipt and gets the same answer instead
of storing the data again. Receipts live in a ``scope`` (for the REST connector: the endpoint and the
credential), expire at ``expires`` (Unix time) and at most ``max_keys`` are kept per scope, the oldest
evicted first. The backends keep them (see gateway/storage/); this module is only the shape.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Receipt:
    """One request's key, the fingerprint of what it sent, and the answer it got."""

    scope: str
    key: str
    fingerprint: bytes  # a digest of the request (method, path, body): the same key with another request is refused
    status: int
    body: bytes
    content_type: str
    expires: float  # Unix time after which the key is forgotten
    max_keys: int = 100_000  # receipts kept in this scope; the oldest are evicted first
