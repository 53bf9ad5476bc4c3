"""Where Prefect keeps cache records, results and locks, and the cache policies.

Prefect's default policy includes the flow-run id, so nothing would be reused across runs.
Expensive tasks use ``INPUTS + TASK_SOURCE`` (inputs include a content digest of the
checkpoint file and the χ store's identity) with SERIALIZABLE isolation and a file lock
manager: two runs that reach the same shard at once compute it once, and the second
reads the first one's record. Storage locations are ``pathlib.Path`` objects (a ``str``
would be read as the name of a storage block).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from patterning_core.workspace import patterning_home


class ProcessAwareLockManager(FileSystemLockManager):
    """File locks that die with their holder.

    Prefect's file locks carry no expiry, so a worker killed while computing a shard
    would block every later run of that shard forever. Each lock file here also records
    the holder's host and pid; a lock whose holder process no longer exists on this host
    (or a lock file left empty by a kill mid-write) is stale and is removed.

    A lock file is created empty and filled a moment later (Prefect's ``acquire_lock``
    touches it, then writes it); another process reading it in between sees an empty or
    partial file. That reads as "locked, holder not yet known" here, never as an error,
    and the holder's own rewrite (host and pid) replaces the file atomically.
    """

    def _get_lock_info(self, key: str, use_cache: bool = True):  # type: ignore[override]
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # empty or half-written: its holder is creating it right now
            return {"holder": None, "expiration": None, "path": self._lock_path_for_key(key)}

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            path = self._lock_path_for_key(key)
            info = json.loads(path.read_text() or "{}")
            info.update(host=socket.gethostname(), pid=os.getpid())
            partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(info))
            os.replace(partial, path)  # readers see the old or the new file, never half
        return acquired

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        path = self._lock_path_for_key(key)
        try:
            text = path.read_text()
            info = json.loads(text) if text else None
        except FileNotFoundError:
            self._locks.pop(key, None)
            return False
        except json.JSONDecodeError:
            info = None
        if info is None:  # killed between creating and writing the lock file
            if time.time() - path.stat().st_mtime > 10:
                path.unlink(missing_ok=True)
                self._locks.pop(key, None)
                return False
            return True
        if info.get("host") == socket.gethostname() and not _process_alive(info.get("pid")):
            path.unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True  # unknown holder: keep the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cache_root() -> Path:
    return patterning_home() / "prefect-cache"


def result_storage() -> Path:
    return cache_root() / "results"


def expensive_task_policy() -> CachePolicy:
    """Cross-run memoization keyed on inputs and task source, one computation at a time."""
    root = cache_root()
    return (INPUTS + TASK_SOURCE).configure(
        key_storage=root / "keys",
        lock_manager=ProcessAwareLockManager(lock_files_directory=root / "locks"),
        isolation_level=IsolationLevel.SERIALIZABLE,
    )
