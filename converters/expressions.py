"""The ``${...}`` expression engine: templates compiled once, rendered against any request dict.

A template is text with zero or more ``${expr}`` placeholders. Each ``expr`` is resolved against
the data dict in this order:

1. the exact top-level key ``expr`` (so ``${sensor_name}``, ``${a-b}``, ``${name with space}``,
   ``${température}`` and even ``${a.b}`` for a key literally named ``a.b`` work);
2. otherwise, for an expression that looks like a path (contains ``.``, ``[``, ``$`` or ``*``),
   a JSONPath (jsonpath-ng): ``${a.b[0].c}``, ``${$.a.b}``, ``${arr[1]}``; the first match wins.
   Dotted segments that are not JSONPath identifiers (spaces, non-ASCII letters) are quoted
   automatically: ``${a.name with space}`` means ``a."name with space"``.

A template that is exactly one placeholder renders to the raw value (its JSON type is kept);
text mixing placeholders and literal text renders to a string. A missing value (or JSON ``null``)
raises :class:`MissingValue`; callers decide what that means. Templates are immutable and
thread-safe: compile once at load time, render from any number of threads.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonpath_ng import parse as _jsonpath_parse

from converters.casting import to_text

_PATH_CHARS = frozenset(".[$*")
_RENDER_ERRORS = (TypeError, KeyError, IndexError, AttributeError, ValueError, RecursionError)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")


class ExpressionError(ValueError):
    """A template cannot be compiled (bad placeholder or JSONPath syntax); found at load time."""


class MissingValue(LookupError):
    """A placeholder has no value (absent or JSON null) in the data it was rendered against."""

    def __init__(self, expression: str) -> None:
        super().__init__(f"${{{expression}}} not found")
        self.expression = expression


@functools.lru_cache(maxsize=1024)
def _compile_path(expr: str) -> Any:
    """Parse ``expr`` as a JSONPath, quoting plain dotted segments when needed."""
    try:
        return _jsonpath_parse(expr)
    except Exception as first:  # noqa: BLE001 - jsonpath-ng/ply raise assorted exception types
        quoted = _quote_segments(expr)
        if quoted is not None:
            try:
                return _jsonpath_parse(quoted)
            except Exception:  # noqa: BLE001
                pass
        raise ExpressionError(f"${{{expr}}} is not a valid JSONPath: {first}") from None


def _quote_segments(expr: str) -> str | None:
    """``a.name with space`` → ``a."name with space"``; None when that cannot apply."""
    if any(c in expr for c in "[]*'\"") or expr.startswith("$") or ".." in expr:
        return None
    segments = expr.split(".")
    if any(not s for s in segments):
        return None
    return ".".join(s if _IDENTIFIER.match(s) else f'"{s}"' for s in segments)


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """One compiled ``${expr}``."""

    expression: str
    path: Any  # compiled JSONPath, or None for a plain key

    def resolve(self, data: Any) -> Any:
        expr = self.expression
        if type(data) is dict or isinstance(data, Mapping):
            value = data.get(expr)
            if value is not None:
                return value
            stripped = expr.strip()
            if stripped != expr:
                value = data.get(stripped)
                if value is not None:
                    return value
        if self.path is not None:
            try:
                for match in self.path.find(data):
                    if match.value is not None:
                        return match.value
                    break
            except _RENDER_ERRORS:
                pass
        raise MissingValue(expr)


def _split(text: str) -> list[str | _Placeholder]:
    """Split ``text`` into literal strings and placeholders, or raise ExpressionError."""
    parts: list[str | _Placeholder] = []
    literal: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("${", i)
        if start < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:start])
        end = _closing_brace(text, start + 2)
        if end < 0:
            raise ExpressionError(f"unclosed placeholder at character {start + 1} of {text!r}")
        expr = text[start + 2 : end]
        if not expr.strip():
            raise ExpressionError(f"empty placeholder ${{}} at character {start + 1} of {text!r}")
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        path = _compile_path(expr.strip()) if any(c in _PATH_CHARS for c in expr) else None
        parts.append(_Placeholder(expr, path))
        i = end + 1
    if "".join(literal):
        parts.append("".join(literal))
    return parts


def _closing_brace(text: str, i: int) -> int:
    """Index of the ``}`` closing a placeholder opened before ``i`` (quotes and brackets respected)."""
    quote = ""
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and depth:
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        elif c == "}" and not depth:
            return j
    return -1


class Template:
    """A compiled text template; see the module docstring for the resolution rules."""

    __slots__ = ("text", "_parts", "_single", "_key", "_constant")

    def __init__(self, text: str, parts: list[str | _Placeholder]) -> None:
        self.text = text
        self._parts = tuple(parts)
        single = len(self._parts) == 1 and isinstance(self._parts[0], _Placeholder)
        self._single = self._parts[0] if single else None
        # fast paths: ``${key}`` looked up straight in a dict; a constant's text returned as it is
        self._key = self._single.expression if single else None
        self._constant = "".join(parts) if self.is_constant else None  # type: ignore[arg-type]

    @property
    def placeholders(self) -> list[str]:
        """The inner expressions, in order (``"Device ${id}"`` → ``["id"]``)."""
        return [p.expression for p in self._parts if isinstance(p, _Placeholder)]

    @property
    def is_constant(self) -> bool:
        """True when the template has no placeholder: it always renders to its text."""
        return not any(isinstance(p, _Placeholder) for p in self._parts)

    @property
    def single_key(self) -> str | None:
        """The expression of a one-placeholder template (``"${temp}"`` → ``"temp"``), else None."""
        return self._key

    @property
    def is_single(self) -> bool:
        """True when the template is exactly one placeholder, so it renders to the raw value."""
        return self._single is not None

    def render(self, data: Any, formatter: Callable[[Any], str] = to_text) -> Any:
        """Render against ``data``; raises :class:`MissingValue` naming the first absent expression.

        ``formatter`` turns each value into text in a mixed template (default: JSON text for
        numbers, booleans, objects and arrays; strings as they are). It is not applied to a
        single-placeholder template, which returns the raw value. The default formatter raises
        :class:`~converters.casting.CastError` for a value that is not JSON (NaN, bytes...).
        """
        key = self._key
        if key is not None:
            if type(data) is dict:
                value = data.get(key)
                if value is not None:
                    return value
            return self._single.resolve(data)  # type: ignore[union-attr]
        if self._constant is not None:
            return self._constant
        out: list[str] = []
        for part in self._parts:
            out.append(part if isinstance(part, str) else formatter(part.resolve(data)))
        return "".join(out)

    def render_or(self, data: Any, default: Any = None, formatter: Callable[[Any], str] = to_text) -> Any:
        """Like :meth:`render` but returns ``default`` when a value is missing."""
        try:
            return self.render(data, formatter)
        except MissingValue:
            return default

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def compile_template(text: str) -> Template:
    """Compile ``text`` once; raises :class:`ExpressionError` for a malformed placeholder or JSONPath."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected a text template, got {type(text).__name__}")
    return Template(text, _split(text))


def constant(text: str) -> Template:
    """A template that renders to ``text`` verbatim, even if it contains ``${``."""
    return Template(text, [text] if text else [])
