"""Builds the configured event storage backend (sqlite or memory) from the gateway config."""
from __future__ import annotations

import os

from gateway.config.model import StorageConfig
from gateway.storage.base import EventStorage, StorageFailure
from gateway.storage.memory import MemoryStorage, SizeLimits
from gateway.storage.sqlite import SqliteStorage

STORAGE_TYPES = ("sqlite", "memory")


def create_storage(config: StorageConfig) -> EventStorage:
    """Open the storage ``config`` describes; the sqlite file's folder is created if missing.

    Raises StorageFailure when the file cannot be created or opened (the message names the path and
    the cause) and ValueError for an unknown type or non-positive limits.
    """
    limits = SizeLimits.from_config(config.max_records, config.max_size_mb)
    if config.type == "memory":
        return MemoryStorage(limits)
    if config.type == "sqlite":
        folder = os.path.dirname(os.path.abspath(config.data_file_path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StorageFailure(
                f"cannot create the folder {folder} for event storage {config.data_file_path}: "
                f"{exc.strerror or exc}") from exc
        return SqliteStorage(config.data_file_path, limits, durability=config.durability)
    raise ValueError(f"unknown storage type {config.type!r}; expected one of {', '.join(STORAGE_TYPES)}")
