"""Reads one config file (JSON or YAML) and collects its problems with file, key and line."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.config.errors import ConfigProblem
from gateway.config.locate import LineIndex, json_lines, yaml_lines

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Problems:
    """Errors and warnings found in one file, each located by JSON pointer (and line, where known)."""

    file: str
    index: LineIndex = field(default_factory=LineIndex)
    errors: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)

    def error(self, pointer: str, message: str, expected: str = "", line: int | None = None) -> None:
        """Record a problem that makes the config unusable."""
        self.errors.append(self._problem(pointer, message, expected, line))

    def warn(self, pointer: str, message: str, expected: str = "", line: int | None = None) -> None:
        """Record a problem the gateway can run with."""
        problem = self._problem(pointer, message, expected, line)
        if problem not in self.warnings:
            self.warnings.append(problem)

    def _problem(self, pointer: str, message: str, expected: str, line: int | None) -> ConfigProblem:
        return ConfigProblem(self.file, pointer, message, expected,
                             line if line is not None else self.index.line(pointer))


@dataclass
class Document:
    """A parsed config file: its data (``None`` if unreadable), format and problems so far."""

    path: str
    data: Any
    format: str  # "json" | "yaml"
    problems: Problems


def read_document(path: str, fmt: str | None = None) -> Document:
    """Read and parse ``path``; a missing, unreadable or unparseable file becomes a problem, never raises.

    ``fmt`` forces "json" or "yaml"; by default ``.yaml``/``.yml`` files are YAML, others JSON.
    """
    path = os.path.abspath(path)
    fmt = fmt or ("yaml" if path.lower().endswith(YAML_SUFFIXES) else "json")
    problems = Problems(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        problems.error("", "file not found", "an existing, readable config file")
        return Document(path, None, fmt, problems)
    except IsADirectoryError:
        problems.error("", "is a directory, not a file", "a config file")
        return Document(path, None, fmt, problems)
    except UnicodeDecodeError as exc:
        problems.error("", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "a UTF-8 encoded file")
        return Document(path, None, fmt, problems)
    except OSError as exc:
        problems.error("", f"cannot be read: {exc.strerror or exc}", "a readable file")
        return Document(path, None, fmt, problems)
    return parse_text(text, path, fmt)


def parse_text(text: str, path: str, fmt: str) -> Document:
    """Parse config ``text`` as ``fmt`` ("json" or "yaml"); syntax errors become located problems."""
    problems = Problems(path)
    try:
        if fmt == "yaml":
            data = yaml.safe_load(text)
            problems.index = yaml_lines(text)
        else:
            data = json.loads(text)
            problems.index = json_lines(text)
    except json.JSONDecodeError as exc:
        problems.error("", f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                       "valid JSON", line=exc.lineno)
        return Document(path, None, fmt, problems)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = f" (line {line}, column {mark.column + 1})" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        problems.error("", f"invalid YAML: {reason}{where}", "valid YAML", line=line)
        return Document(path, None, fmt, problems)
    except (RecursionError, ValueError) as exc:
        problems.error("", f"cannot be parsed: {type(exc).__name__}: {exc}"[:200], f"valid {fmt.upper()}")
        return Document(path, None, fmt, problems)
    return Document(path, data, fmt, problems)


def resolve_path(value: str, base_file: str) -> str:
    """``value`` with ``~`` expanded, made absolute relative to the folder of ``base_file``."""
    expanded = os.path.expanduser(value)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base_file)), expanded))


def check_readable_file(path: str) -> str | None:
    """Why ``path`` is not a readable file, or ``None`` if it is."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None
