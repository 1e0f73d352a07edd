"""The daemon's pid file: written at start, read by ``rest-gateway reload``, removed on a clean exit."""
from __future__ import annotations

import os
import tempfile


class PidFileError(Exception):
    """The pid file names a gateway that is still running."""


class PidFileUnwritable(PidFileError):
    """The pid file cannot be written (the gateway can run without it; ``rest-gateway reload`` cannot find it)."""


def read_pid(path: str) -> int | None:
    """The pid in ``path``, or None when the file is missing or holds no pid."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError):  # missing, unreadable, or a path through a file
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_running_gateway(pid: int) -> bool:
    """Whether process ``pid`` exists and (where /proc tells) runs the gateway, not a process that reused the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ")
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # no /proc at all: trust the pid
    except OSError:
        return True
    return b"gateway" in command


def write_pid_file(path: str) -> None:
    """Write this process's pid to ``path`` atomically.

    Raises PidFileError if another running gateway owns it, PidFileUnwritable if it cannot be written.
    """
    other = read_pid(path)
    # our parent is not another gateway: e.g. docker --init's tini, after a restart on a kept volume
    if other is not None and other not in (os.getpid(), os.getppid()) and is_running_gateway(other):
        raise PidFileError(f"another rest-gateway (pid {other}) runs with the pid file {path}; stop it first, "
                           "or give this one its own storage and pidFile")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".rest-gateway-pid-")
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(f"{os.getpid()}\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise PidFileUnwritable(f"cannot write the pid file {path}: {exc.strerror or exc} (set pidFile in "
                                "gateway.yaml to a writable path)") from exc


def remove_pid_file(path: str) -> None:
    """Remove ``path`` if it still names this process (a newer daemon's file is left alone)."""
    if read_pid(path) == os.getpid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
