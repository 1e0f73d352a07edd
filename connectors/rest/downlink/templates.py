"""Downlink templates: ``${...}`` URLs (percent-encoded segments) and bodies (JSON-escaped when JSON).

Built on :mod:`converters.expressions`: every placeholder is compiled once at load time and
resolved against a small context dict (``deviceName``, ``attributeKey``, ``params`` ...). What
changes is how a value is written into the text:

* URL: each value becomes one percent-encoded path segment (``/``, ``?``, ``#``, ``%`` and
  spaces are encoded; a value of ``.`` or ``..`` is encoded too), so a value can never change
  the path, the query or the host.
* JSON body: inside a JSON string literal a value is JSON-escaped (``1.2 "beta"`` →
  ``1.2 \\"beta\\"``); a placeholder where a JSON value goes takes the value's JSON form
  (``42``, ``true``, ``{"a":1}``, ``"text"``).
* Other bodies: a value's text (strings as they are, anything else as compact JSON).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from converters.casting import to_text
from converters.expressions import MissingValue, Template, compile_template

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_HOST_PORT = re.compile(r"[A-Za-z0-9.\-]+:[0-9]{1,5}(/|\Z)")


class TemplateError(ValueError):
    """A template names a placeholder its section does not offer; found at load time."""


def _segments(template: Template) -> list[tuple[str, str | None]]:
    """``(literal, expression)`` pairs in order; the last expression may be None (trailing text)."""
    text, pos, out = template.text, 0, []
    if template.is_constant:
        return [(text, None)]
    for expr in template.placeholders:
        token = "${" + expr + "}"
        start = text.find(token, pos)  # literals never contain "${", so this is the placeholder
        out.append((text[pos:start], expr))
        pos = start + len(token)
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def _json_in_string_after(literal: str, in_string: bool) -> bool:
    """Whether a JSON lexer is inside a string literal after reading ``literal``."""
    escaped = False
    for char in literal:
        if escaped:
            escaped = False
        elif in_string and char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
    return in_string


def _allowed(expr: str, names: frozenset[str]) -> bool:
    if expr in names:
        return True
    return "params" in names and (expr.startswith("params.") or expr.startswith("params["))


@dataclass(frozen=True, slots=True)
class _Slot:
    literal: str
    expression: str | None
    template: Template | None  # a one-placeholder template resolving ``expression``
    in_json_string: bool


class DownlinkTemplate:
    """One compiled ``requestUrlExpression`` or ``valueExpression``.

    ``names`` are the placeholders the section offers (``params.…`` is allowed when ``params``
    is); anything else is a :class:`TemplateError` at compile time.
    """

    def __init__(self, text: str, names: frozenset[str]) -> None:
        self.text = text
        template = compile_template(text)
        unknown = [e for e in template.placeholders if not _allowed(e.strip(), names)]
        if unknown:
            offered = ", ".join("${" + n + "}" for n in sorted(names))
            if "params" in names:
                offered += ", ${params.a.b}"
            raise TemplateError(f"unknown placeholder ${{{unknown[0]}}}; this section offers {offered}")
        slots: list[_Slot] = []
        in_string = False
        for literal, expr in _segments(template):
            in_string = _json_in_string_after(literal, in_string)
            single = compile_template("${" + expr + "}") if expr is not None else None
            slots.append(_Slot(literal, expr, single, in_string))
        self._slots = tuple(slots)

    @property
    def is_constant(self) -> bool:
        return all(slot.expression is None for slot in self._slots)

    def _value(self, slot: _Slot, context: Mapping[str, Any]) -> Any:
        expr = slot.expression
        assert expr is not None and slot.template is not None
        key = expr.strip()
        if key in context:
            return context[key]  # None stays None (JSON null)
        return slot.template.render(context)  # nested params: JSONPath through the engine

    def render_url(self, context: Mapping[str, Any]) -> str:
        """The URL with each value as one percent-encoded path segment; raises MissingValue."""
        out: list[str] = []
        for slot in self._slots:
            out.append(slot.literal)
            if slot.expression is not None:
                out.append(url_segment(self._value(slot, context)))
        return "".join(out)

    def render_json(self, context: Mapping[str, Any]) -> str:
        """The body with values JSON-escaped inside strings and as JSON values elsewhere."""
        out: list[str] = []
        for slot in self._slots:
            out.append(slot.literal)
            if slot.expression is None:
                continue
            value = self._value(slot, context)
            if slot.in_json_string:
                out.append(json.dumps(value if isinstance(value, str) else _text(value),
                                      ensure_ascii=False)[1:-1])
            else:
                out.append(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        return "".join(out)

    def render_text(self, context: Mapping[str, Any]) -> str:
        """The body with each value's text (strings as they are, others as compact JSON)."""
        out: list[str] = []
        for slot in self._slots:
            out.append(slot.literal)
            if slot.expression is not None:
                out.append(_text(self._value(slot, context)))
        return "".join(out)

    def fills_to_json(self) -> bool:
        """True when the template is a JSON object or array once its placeholders are filled."""
        stripped = self.text.strip()
        if not stripped.startswith(("{", "[")):
            return False
        try:
            json.loads(self.render_json(_SampleContext()))
        except (ValueError, MissingValue):
            return False
        return True

    def __repr__(self) -> str:
        return f"DownlinkTemplate({self.text!r})"


class _SampleContext(dict):
    """Answers every placeholder with a sample string (to test whether a template is JSON)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return "x"


def _text(value: Any) -> str:
    if value is None:
        return "null"
    return to_text(value)


def url_segment(value: Any) -> str:
    """``value`` as one percent-encoded path segment (``a/b`` → ``a%2Fb``, ``..`` → ``%2E%2E``)."""
    text = _text(value)
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")


def is_absolute(url_template: str) -> bool:
    """True for ``http://…``/``https://…`` (any scheme); False for ``/path`` and ``path``."""
    return bool(_SCHEME.match(url_template))


def looks_like_host_port(url_template: str) -> bool:
    """``127.0.0.1:5001/path``: an absolute URL written without its scheme (``http://`` is assumed)."""
    return bool(_HOST_PORT.match(url_template))


def join_url(base: str, relative: str) -> str:
    """``base`` + ``/`` + ``relative``, with exactly one slash between them (a base path is kept)."""
    return base.rstrip("/") + "/" + relative.lstrip("/")
