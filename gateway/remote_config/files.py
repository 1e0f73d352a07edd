"""Config files written for remote configuration: atomic replacement and timestamped, bounded backups.

A replaced file is first copied to ``backup/<stem>.backup.<UTC time>.<suffix>`` beside it (the
reference gateway's folder and naming, with microseconds so two changes in one second keep both);
only the newest :data:`KEEP_BACKUPS` per file are kept. New content is written to a temporary file
in the same folder, flushed to disk, then renamed over the old one, so a crash leaves either the
old file or the new one, never half of each.
"""
from __future__ import annotations

import os
import shutil
import time

#: backups kept per config file (the reference keeps 10 as well)
KEEP_BACKUPS = 10
BACKUP_FOLDER = "backup"


def temp_path(path: str) -> str:
    """Where new content for ``path`` is staged: a hidden file beside it (never watched, never loaded)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.remote.tmp")


def write_staged(path: str, text: str) -> str:
    """Write ``text`` to ``path``'s staging file, flushed to disk, with ``path``'s permissions; returns its path.

    The staging file is created readable by its owner only, then given the permissions of the file it
    replaces, so a connector file kept private (it holds passwords) never becomes readable by others.
    """
    staged = temp_path(path)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    _same_mode(path, staged)
    return staged


def _same_mode(original: str, copy: str) -> None:
    try:
        shutil.copymode(original, copy)
    except OSError:  # the original is gone: keep the private default
        pass


def replace_with(staged: str, path: str) -> None:
    """Rename ``staged`` over ``path`` atomically and make the rename durable."""
    os.replace(staged, path)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def backup(path: str, keep: int = KEEP_BACKUPS) -> str:
    """Copy ``path`` into its ``backup/`` folder under a timestamped name; prune to ``keep``; return the copy's path."""
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), BACKUP_FOLDER)
    os.makedirs(folder, exist_ok=True)
    stem, suffix = os.path.splitext(os.path.basename(path))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() // 1000 % 1_000_000:06d}Z"
    target = os.path.join(folder, f"{stem}.backup.{stamp}{suffix}")
    while os.path.exists(target):  # same microsecond: never overwrite a backup
        stamp += "_"
        target = os.path.join(folder, f"{stem}.backup.{stamp}{suffix}")
    shutil.copy2(path, target)
    prune(folder, stem, suffix, keep)
    return target


def backups_of(folder: str, stem: str, suffix: str) -> list[str]:
    """The backups of one file in ``folder``, oldest first (their names sort by time)."""
    prefix = f"{stem}.backup."
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(folder, n) for n in names if n.startswith(prefix) and n.endswith(suffix))


def prune(folder: str, stem: str, suffix: str, keep: int) -> None:
    """Remove the oldest backups of one file beyond ``keep``."""
    for old in backups_of(folder, stem, suffix)[:-keep] if keep > 0 else []:
        try:
            os.remove(old)
        except OSError:
            pass


def restore(backup_path: str, path: str) -> None:
    """Put ``backup_path``'s content back at ``path`` (atomically); the backup itself stays."""
    staged = temp_path(path)
    shutil.copyfile(backup_path, staged)
    _same_mode(backup_path, staged)
    replace_with(staged, path)
