"""Names for processes that stay true after a pid is reused: ``pid:start``.

A lock file, a running command's record or a service's owner names the process that holds
it by :func:`process_key`; :func:`process_running` tells whether that very process still
runs on this machine (a pid alone could name a newer process that got the same number).
"""

from __future__ import annotations

from pathlib import Path

import psutil

__all__ = ["process_key", "process_running"]


def _start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks after boot (``/proc/PID/stat``, field 22), or
    None where there is no ``/proc``. Unlike ``create_time()`` (boot time read from the wall
    clock plus these ticks) it never drifts while the process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def process_key(pid: int) -> str:
    """``pid:start``: names one process, even after its pid is reused (start: clock ticks
    after boot on Linux, else the creation time in seconds with two decimals)."""
    ticks = _start_ticks(pid)
    return (
        f"{pid}:{ticks}" if ticks is not None else f"{pid}:{psutil.Process(pid).create_time():.2f}"
    )


def process_running(key: str) -> bool:
    """Whether the process named by :func:`process_key` still runs on this machine (a
    zombie does not run; a process this user may not inspect is taken to run)."""
    pid, _, started = key.partition(":")
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if "." not in started:
            return _start_ticks(int(pid)) == started
        return abs(proc.create_time() - float(started)) < 0.05
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True
