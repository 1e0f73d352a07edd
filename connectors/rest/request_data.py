"""Turns an HTTP request's body, query string and path variables into converter input."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

JSON_CONTENT_TYPES = ("application/json", "text/json")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MULTIPART_CONTENT_TYPE = "multipart/form-data"
MAX_MULTIPART_PARTS = 1000


class BadRequestData(ValueError):
    """The request cannot be turned into converter input; the text says why (sent with a 400)."""


class InvalidJsonSyntax(BadRequestData):
    """The body is UTF-8 but not JSON text (a syntax error); ``text`` holds the decoded body."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


@dataclass(slots=True)
class RequestInput:
    """What a converter gets from one request.

    ``messages`` holds one dict per message (a JSON array body gives several), each with the
    path variables and query-string parameters merged underneath the body's own keys. ``raw``
    is the body as received. ``body_kind`` is "json", "form", "empty" or "raw".
    """

    messages: list[dict[str, Any]]
    raw: bytes
    body_kind: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every request: json.loads(..., parse_constant=...) would build a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    """``json.loads(text, parse_constant=_reject_constant)`` on the shared decoder."""
    if text.startswith("\ufeff"):  # the check json.loads makes before decoding
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def parse_json(body: bytes) -> Any:
    """Parse a JSON body strictly: UTF-8 only, no NaN/Infinity, bounded nesting; BadRequestData otherwise."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequestData(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJsonSyntax(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                text) from None
    except RecursionError:
        raise BadRequestData("body is not accepted: JSON nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer with too many digits
        raise BadRequestData(f"body is not accepted: {exc}") from None


def _looks_like_json(body: bytes) -> bool:
    head = body.lstrip()[:1]
    return head in (b"{", b"[") or body.startswith(b"\xef\xbb\xbf")


def read_request(
    body: bytes, content_type: str, query_string: bytes, path_vars: dict[str, Any], want_raw: bool
) -> RequestInput:
    """Build the converter input of one request.

    A JSON body is parsed whatever the Content-Type (devices often send JSON as a form). An
    urlencoded form gives its fields. Any other body is handed over raw when ``want_raw`` (a
    custom converter), else rejected. Body keys win over query parameters, which win over path
    variables.
    """
    base: dict[str, Any] = dict(path_vars)
    if query_string:
        try:
            query = parse_qsl(query_string.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequestData("query string is not valid UTF-8") from None
        base.update(query)
    mime = content_type.split(";", 1)[0].strip().lower()
    if not body or body.isspace():  # same as "not body.strip()", without copying the body
        return RequestInput([base], body, "empty")
    is_json_type = mime in JSON_CONTENT_TYPES or mime.endswith("+json")
    if is_json_type or _looks_like_json(body):
        try:
            document = parse_json(body)
        except BadRequestData:
            if want_raw and not is_json_type:
                return RequestInput([base], body, "raw")
            raise
        return RequestInput(_messages_from_json(document, base), body, "json")
    if mime == FORM_CONTENT_TYPE:
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            if want_raw:
                return RequestInput([base], body, "raw")
            raise BadRequestData("body is neither JSON nor a valid urlencoded form") from None
        merged = dict(base)
        merged.update(fields)
        return RequestInput([merged], body, "form")
    if mime == MULTIPART_CONTENT_TYPE:
        merged = dict(base)
        merged.update(multipart_fields(body, content_type))
        return RequestInput([merged], body, "multipart")
    if want_raw:
        return RequestInput([base], body, "raw")
    raise BadRequestData(
        f"body is not JSON (Content-Type {mime or 'missing'}); send a JSON object, an array of objects, "
        "an urlencoded form or multipart/form-data fields"
    )


def multipart_fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body, as the reference reads them: a text field gives its
    text, a part sent as JSON (``Content-Type: application/json``) its parsed value. A file part (one
    with a ``filename``) is refused: the reference drops it silently, which loses data unseen."""
    boundary = parse_options_header(content_type)[1].get("boundary", "")
    if not boundary:
        raise BadRequestData("multipart/form-data without a boundary parameter in Content-Type")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"), max_parts=MAX_MULTIPART_PARTS)
    fields: dict[str, Any] = {}
    current: Field | None = None
    chunks: list[bytes] = []
    try:
        decoder.receive_data(body)
        decoder.receive_data(None)
        while True:
            event = decoder.next_event()
            if isinstance(event, Epilogue):
                return fields
            if isinstance(event, NeedData):
                raise BadRequestData("multipart/form-data body is incomplete (no closing boundary)")
            if isinstance(event, File):
                raise BadRequestData(f"multipart part {event.name!r} is a file ({event.filename!r}): files are "
                                     "not accepted; send text or JSON fields")
            if isinstance(event, Field):
                current, chunks = event, []
            elif isinstance(event, Data) and current is not None:
                chunks.append(event.data)
                if not event.more_data:
                    fields[current.name] = _field_value(current, b"".join(chunks))
                    current = None
    except BadRequestData:
        raise
    except ValueError as exc:  # werkzeug's "Invalid form-data"
        raise BadRequestData(f"multipart/form-data body cannot be read: {exc}") from None
    except Exception as exc:  # RequestEntityTooLarge (too many parts) is an HTTPException
        raise BadRequestData(f"multipart/form-data body cannot be read: {getattr(exc, 'description', exc)}") \
            from None


def _field_value(field: Field, data: bytes) -> Any:
    mime, options = parse_options_header(field.headers.get("Content-Type", "text/plain"))
    if mime in JSON_CONTENT_TYPES or mime.endswith("+json"):
        try:
            return parse_json(data)
        except BadRequestData as exc:
            raise BadRequestData(f"multipart field {field.name!r}: {exc}") from None
    try:
        return data.decode(options.get("charset", "utf-8"))
    except (LookupError, UnicodeDecodeError):
        raise BadRequestData(f"multipart field {field.name!r} is not valid text in its charset") from None


def _messages_from_json(document: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        return [{**base, **document}] if base else [document]
    if isinstance(document, list):
        if not document:
            raise BadRequestData("body is an empty JSON array: nothing to store")
        messages = []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise BadRequestData(f"element [{index}] of the JSON array is {_kind(item)}, expected an object")
            messages.append({**base, **item} if base else item)
        return messages
    raise BadRequestData(f"body is {_kind(document)}; expected a JSON object or an array of objects")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
