"""Request bodies sent with ``Content-Encoding: gzip`` (or ``deflate``): decompressed within the body limit.

The decompressed size is bounded by the endpoint's ``maxBodySize`` like the body as received: a
small gzip bomb is refused with 413 after at most ``limit + 1`` bytes of output, never expanded in
memory.
"""
from __future__ import annotations

import zlib

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyEncodingError(ValueError):
    """The body cannot be decoded; ``status`` is the HTTP answer (400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` with every listed content coding undone (last applied first), at most ``limit`` bytes."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        wbits = _WBITS.get(coding)
        if wbits is None:
            raise BodyEncodingError(415, f"Content-Encoding {coding!r} is not supported; send the body "
                                    "uncompressed or with gzip or deflate")
        body = _inflate(body, wbits, coding, limit)
    return body


def _inflate(body: bytes, wbits: int, coding: str, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyEncodingError(400, f"body is not valid {coding} data ({exc})") from None
    if len(out) > limit:
        raise BodyEncodingError(413, f"request body is larger than the limit of {limit} bytes (maxBodySize) "
                                f"once decompressed ({coding})")
    if not decompressor.eof:
        raise BodyEncodingError(400, f"body is not valid {coding} data (truncated)")
    if decompressor.unused_data.strip(b"\x00"):
        raise BodyEncodingError(400, f"body is not valid {coding} data (bytes after the end of the stream)")
    return out
