"""Config problems: each names the file, the key (JSON pointer), the line where known, and the fix."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file."""

    file: str
    pointer: str  # JSON pointer of the key, "" for the whole document
    message: str  # what is wrong
    expected: str = ""  # what is expected instead (the fix)
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = self.pointer or "/"
        text = f"{where}: {key}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class ConfigError(Exception):
    """One or more config problems; raised with all problems found, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
