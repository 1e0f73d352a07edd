"""Lenient JSON as ThingsBoard's Gson reads it: unquoted names and words, single quotes, ``=`` and ``;``.

ThingsBoard's own docs show ``curl --data "{"temperature":42}"``; the shell strips the inner quotes and
ThingsBoard still accepts ``{temperature:42}``. Devices that rely on this keep working here. A strict
parse is always tried first; this is only the fallback.
"""
from __future__ import annotations

import json
import re
from typing import Any

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERAL_END = set("/\\;#={}[]:, \t\f\r\n")
_WHITESPACE = " \t\f\r\n"
_SINGLE_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
MAX_DEPTH = 200


class LenientError(ValueError):
    """Not even lenient JSON."""


def parse_lenient(text: str) -> Any:
    """The value of ``text`` read leniently; raises LenientError."""
    parser = _Parser(text)
    value = parser.value(0)
    parser.skip()
    if parser.pos != len(text):
        raise LenientError(f"unexpected {text[parser.pos]!r} at character {parser.pos}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in _WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos) or char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise LenientError("unterminated comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        if self.pos >= len(self.text):
            raise LenientError("unexpected end of the document")
        return self.text[self.pos]

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise LenientError("nested too deeply")
        char = self.peek()
        if char == "{":
            return self.obj(depth)
        if char == "[":
            return self.array(depth)
        if char in "\"'":
            return self.string(char)
        return self.literal()

    def obj(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        if self.peek() == "}":
            self.pos += 1
            return result
        while True:
            char = self.peek()
            name = self.string(char) if char in "\"'" else self.word()
            sep = self.peek()
            if sep == ":":
                self.pos += 1
            elif sep == "=":
                self.pos += 2 if self.text.startswith("=>", self.pos) else 1
            else:
                raise LenientError(f"expected ':' after name {name!r}")
            result[name] = self.value(depth + 1)
            char = self.peek()
            self.pos += 1
            if char == "}":
                return result
            if char not in ",;":
                raise LenientError(f"expected ',' or '}}' at character {self.pos - 1}")

    def array(self, depth: int) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        if self.peek() == "]":
            self.pos += 1
            return result
        while True:
            result.append(self.value(depth + 1))
            char = self.peek()
            self.pos += 1
            if char == "]":
                return result
            if char not in ",;":
                raise LenientError(f"expected ',' or ']' at character {self.pos - 1}")

    def string(self, quote: str) -> str:
        if quote == '"':
            try:
                value, self.pos = json.decoder.scanstring(self.text, self.pos + 1)
            except json.JSONDecodeError as exc:
                raise LenientError(str(exc)) from None
            return value
        out: list[str] = []
        pos = self.pos + 1
        text = self.text
        while pos < len(text):
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                return "".join(out)
            if char == "\\" and pos + 1 < len(text):
                nxt = text[pos + 1]
                if nxt == "u" and pos + 6 <= len(text):
                    try:
                        out.append(chr(int(text[pos + 2:pos + 6], 16)))
                    except ValueError:
                        raise LenientError("bad \\u escape") from None
                    pos += 6
                    continue
                if nxt not in _SINGLE_ESCAPES:
                    raise LenientError(f"bad escape \\{nxt}")
                out.append(_SINGLE_ESCAPES[nxt])
                pos += 2
                continue
            out.append(char)
            pos += 1
        raise LenientError("unterminated string")

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _LITERAL_END:
            self.pos += 1
        if self.pos == start:
            raise LenientError(f"unexpected {self.text[start]!r} at character {start}")
        return self.text[start:self.pos]

    def literal(self) -> Any:
        word = self.word()
        if word in ("true", "false"):
            return word == "true"
        if word == "null":
            return None
        if _NUMBER.fullmatch(word):
            return json.loads(word)
        return word
