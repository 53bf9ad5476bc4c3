"""A watchdog that ends a service when the command that started it is gone.

``python -m flows.guard PARENT_PID -- COMMAND [ARGS...]`` leads its own session and
process group, starts ``COMMAND`` in that group and polls its own parent: once
``PARENT_PID`` is no longer its parent (the command ended, however it ended, SIGKILL
included: the guard is then re-parented), or on SIGTERM/SIGINT/SIGHUP, it sends SIGTERM to
its whole process group, waits up to ``GRACE_S`` for the service to exit, then SIGKILLs
whatever of the group is left (itself last). When the service exits by itself, the guard
ends the rest of the group the same way.

A watchdog rather than Linux's parent-death signal (``PR_SET_PDEATHSIG``): that signal
fires when the *thread* that spawned the child exits, which in a Python program may be a
worker thread long before the command ends, and it exists on Linux only. Polling
``getppid`` works on every POSIX system and cannot fire early. The guard imports only the
standard library and costs a few MB and a wake-up every ``POLL_S``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_S = 0.2
GRACE_S = 6.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m flows.guard PARENT_PID -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    if os.getpgid(0) != os.getpid():  # lead a group of our own: killpg(0) below is ours
        os.setsid()
    if os.getppid() != parent:  # the command already ended while we started
        return 1
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    service = subprocess.Popen(command)
    while service.poll() is None and not stopping and os.getppid() == parent:
        time.sleep(POLL_S)
    if service.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)  # the service and anything it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=GRACE_S)
    code = service.returncode if service.returncode is not None else 1
    sys.stdout.flush()
    os.killpg(0, signal.SIGKILL)  # leftovers of the group, and the guard itself
    return code  # not reached


if __name__ == "__main__":
    sys.exit(main())
