"""Turns an HTTP request's body, query string and path variables into converter input."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

JSON_CONTENT_TYPES = ("application/json", "text/json")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


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
    if want_raw:
        return RequestInput([base], body, "raw")
    raise BadRequestData(
        f"body is not JSON (Content-Type {mime or 'missing'}); send a JSON object, an array of objects "
        "or an urlencoded form"
    )


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
