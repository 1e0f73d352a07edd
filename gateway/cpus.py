"""Which CPUs the daemon runs on (gateway.yaml ``cpus``). By default one CPU, the least busy at start.

CPython runs one thread at a time. When the daemon's threads are spread over several cores, every
hand-over of the GIL crosses cores: a woken thread waits for another CPU to let go of the GIL,
and the threads wake each other more often. Measured on the 2-core bench VM, SQLite storage, 64
connections (docs/performance.md, "One CPU"): 1,397–1,596 req/s when the kernel spreads the
threads, 2,037–2,354 on one CPU with the load generator free to use either. ``all`` keeps the
kernel's choice; a list of CPU numbers binds the daemon to those.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

#: how long ``auto`` watches the CPUs before it picks one
SAMPLE_S = 0.1
#: CPUs whose idle time in the sample is within this share of the idlest one count as equally idle
_TIE = 0.1
#: the CPUs the process could use before :func:`apply_cpus` bound it (empty until then)
_AT_START: set[int] = set()


class CpuSettingError(ValueError):
    """``cpus`` names CPUs this process may not run on."""


def describe(cpus: Iterable[int]) -> str:
    """CPU numbers as ranges, e.g. ``0-3,6``."""
    ordered = sorted(cpus)
    parts: list[str] = []
    start = prev = None
    for cpu in [*ordered, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


def idle_ticks() -> dict[int, int]:
    """Idle and iowait ticks of each CPU so far (from /proc/stat; empty where it cannot be read)."""
    ticks: dict[int, int] = {}
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 5:
                    ticks[int(name[3:])] = int(fields[3]) + int(fields[4])
    except (OSError, ValueError):
        return {}
    return ticks


def idlest(available: set[int], sample_s: float = SAMPLE_S, read: Callable[[], dict[int, int]] = idle_ticks,
           sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """The CPUs of ``available`` about as idle as the idlest one over ``sample_s``, in number order.

    All of ``available`` when the sample cannot be taken.
    """
    before = read()
    sleep(sample_s)
    after = read()
    idle = {cpu: after[cpu] - before[cpu] for cpu in available if cpu in before and cpu in after}
    if not idle:
        return sorted(available)
    best = max(idle.values())
    return sorted(cpu for cpu, ticks in idle.items() if ticks >= best - max(1.0, best * _TIE))


def choose(setting: str | tuple[int, ...], available: set[int], candidates: Callable[[], list[int]],
           pid: int) -> set[int] | None:
    """The CPUs to bind the daemon to, or None to leave its affinity as it is.

    ``auto`` on two CPUs or more: one of ``candidates()`` (the idlest), the process id choosing among
    equals, so that instances started together tend to take different CPUs.
    """
    if setting == "all":
        return None
    if setting == "auto":
        if len(available) < 2:
            return None
        idle = [cpu for cpu in candidates() if cpu in available] or sorted(available)
        return {idle[pid % len(idle)]}
    wanted = set(setting)
    missing = wanted - available
    if missing:
        raise CpuSettingError(f"CPU {describe(missing)} is not available to this process (it may run on "
                              f"{describe(available)}); list CPUs from {describe(available)}, or use auto")
    return None if wanted == available else wanted


def bind(cpus: set[int]) -> None:
    """Run every thread of this process on ``cpus`` (threads started later inherit it)."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def apply_cpus(setting: str | tuple[int, ...], file: str) -> str:
    """Bind the daemon as ``cpus`` asks; returns what it did, for the log.

    Raises CpuSettingError (naming ``file`` and the key) when the listed CPUs are not available.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "cpus: this system cannot bind a process to CPUs; the kernel places the threads"
    available = os.sched_getaffinity(0)
    _AT_START.clear()
    _AT_START.update(available)
    try:
        chosen = choose(setting, available, lambda: idlest(available), os.getpid())
    except CpuSettingError as exc:
        raise CpuSettingError(f"{file}: cpus: {exc}") from None
    if chosen is None:
        how = "one CPU available" if setting == "auto" else f"cpus: {_setting_text(setting)}"
        return f"running on CPUs {describe(available)} ({how}; the kernel places the threads)"
    bind(chosen)
    if setting == "auto":
        return (f"running on CPU {describe(chosen)} of {describe(available)} (cpus: auto, the least busy at start; "
                "cpus: all lets the kernel spread the threads)")
    return f"running on CPUs {describe(chosen)} of {describe(available)} (cpus: {_setting_text(setting)})"


def restore_start_affinity() -> None:
    """Give the calling thread back the CPUs the process could use at start.

    Called before an in-place restart (exec): the new run inherits this thread's affinity, and
    should choose again from every CPU, not only the one this run chose.
    """
    if _AT_START and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, _AT_START)


def _setting_text(setting: str | tuple[int, ...]) -> str:
    return setting if isinstance(setting, str) else "[" + ", ".join(map(str, setting)) + "]"
