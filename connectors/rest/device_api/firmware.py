"""Firmware/software packages from a local folder laid out as ``TITLE/VERSION/FILE``."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Package:
    """One package file."""

    path: str
    filename: str
    size: int


def _safe_segment(value: str) -> bool:
    return bool(value) and value not in (".", "..") and "/" not in value and "\\" not in value \
        and "\x00" not in value


def find_package(root: str, title: str, version: str) -> Package | None:
    """The package of ``title``/``version`` (the folder's only file, or its first by name); None if absent."""
    if not root or not _safe_segment(title) or not _safe_segment(version):
        return None
    folder = os.path.join(root, title, version)
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError:
        return None
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return Package(path, name, os.path.getsize(path))
    return None


def read_range(package: Package, size: int, chunk: int) -> bytes:
    """The whole file when ``size`` is 0, else bytes ``[chunk*size, chunk*size+size)`` (empty past the end)."""
    with open(package.path, "rb") as fh:
        if size <= 0:
            return fh.read()
        fh.seek(chunk * size)
        return fh.read(size)
