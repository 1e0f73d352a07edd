"""Access token → device: the configured devices plus provisioned ones, kept in a small sqlite file.

Only a SHA-256 digest of each provisioned token is stored, and lookups go by digest, so neither the
file nor a timing difference gives a token away.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from connectors.rest.device_api.model import DeviceCredentials

_SCHEMA = """CREATE TABLE IF NOT EXISTS provisioned_devices (
    token_sha256 TEXT PRIMARY KEY,
    device_name TEXT NOT NULL UNIQUE,
    device_type TEXT NOT NULL,
    created_ms INTEGER NOT NULL)"""


class RegistryFailure(Exception):
    """The registry file cannot be written (disk full, unwritable)."""


@dataclass(frozen=True, slots=True)
class Device:
    """A device the device API knows: its ThingsBoard name and type (device profile)."""

    name: str
    type: str
    provisioned: bool = False


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenRegistry:
    """Thread-safe token lookup; ``path`` None keeps provisioned devices in memory only."""

    def __init__(self, configured: Iterable[DeviceCredentials], path: str | None,
                 logger: logging.Logger | None = None) -> None:
        self.path = path
        self.log = logger or logging.getLogger("connectors.rest.device_api")
        self._lock = threading.Lock()
        self._by_digest: dict[str, Device] = {}
        self._names: set[str] = set()
        for entry in configured:
            self._by_digest[digest(entry.access_token)] = Device(entry.device_name, entry.device_type)
            self._names.add(entry.device_name)
        self._db: sqlite3.Connection | None = None
        if path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._load()

    def _load(self) -> None:
        assert self._db is not None
        rows = self._db.execute("SELECT token_sha256, device_name, device_type FROM provisioned_devices "
                                "ORDER BY created_ms").fetchall()
        for token_digest, name, device_type in rows:
            if name in self._names or token_digest in self._by_digest:
                self.log.warning("provisioned device %r is also configured in rest.json; the configured "
                                 "entry is used", name)
                continue
            self._by_digest[token_digest] = Device(name, device_type, provisioned=True)
            self._names.add(name)
        if rows:
            self.log.info("device API: %d provisioned device(s) loaded from %s", len(rows), self.path)

    def lookup(self, token: str) -> Device | None:
        """The device with ``token``, or None."""
        if not token:
            return None
        return self._by_digest.get(digest(token))

    def has_name(self, name: str) -> bool:
        with self._lock:
            return name in self._names

    def has_token(self, token: str) -> bool:
        return self.lookup(token) is not None

    def names(self) -> set[str]:
        """Every device name with a token."""
        with self._lock:
            return set(self._names)

    def count(self) -> tuple[int, int]:
        """(configured, provisioned) device counts."""
        with self._lock:
            provisioned = sum(1 for d in self._by_digest.values() if d.provisioned)
            return len(self._by_digest) - provisioned, provisioned

    def add(self, token: str, name: str, device_type: str) -> bool:
        """Register a provisioned device durably; False when the name or token is taken.

        Raises RegistryFailure when the file cannot be written (nothing is registered then).
        """
        key = digest(token)
        with self._lock:
            if name in self._names or key in self._by_digest:
                return False
            if self._db is not None:
                try:
                    self._db.execute("INSERT INTO provisioned_devices VALUES (?, ?, ?, ?)",
                                     (key, name, device_type, int(time.time() * 1000)))
                except sqlite3.IntegrityError:
                    return False
                except sqlite3.Error as exc:
                    raise RegistryFailure(str(exc)) from None
            self._by_digest[key] = Device(name, device_type, provisioned=True)
            self._names.add(name)
            return True

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
