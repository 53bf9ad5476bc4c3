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
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from patterning_core.workspace import patterning_home
from tasks.processes import process_key, process_running


class ProcessAwareLockManager(FileSystemLockManager):
    """File locks that die with their holder.

    Prefect's file locks carry no expiry, so a worker killed while computing a shard
    would block every later run of that shard forever. Each lock file here also names its
    holder's host and process (``pid:start``, see :mod:`tasks.processes`); a lock whose
    holder no longer runs on this host is stale and is removed.

    A lock file is created whole, in one step: written under a private name, then
    hard-linked to the lock's name (a link fails where the name exists). So no kill at any
    moment can leave a lock without its holder. (Prefect's own ``acquire_lock`` touches the
    file, then writes it: a kill in between would leave an empty file, or, before the holder
    was known, one that nothing could tell stale.) An empty or unreadable lock file, left by
    an older version, is stale once it is 10 s old.
    """

    def _get_lock_info(self, key: str, use_cache: bool = True):  # type: ignore[override]
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # empty or half-written (an older version's kill)
            return {"holder": None, "expiration": None, "path": self._lock_path_for_key(key)}

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        while True:
            waiting = self.is_locked(key) and not self.is_lock_holder(key, holder)
            if waiting and not self.wait_for_lock(key, acquire_timeout):
                return False
            expiration = None
            if hold_timeout is not None:
                expiration = datetime.now(UTC) + timedelta(seconds=hold_timeout)
            info = {
                "holder": holder,
                "expiration": None if expiration is None else str(expiration),
                "host": socket.gethostname(),
                "process": process_key(os.getpid()),
            }
            private = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            private.write_text(json.dumps(info))
            try:
                os.link(private, path)
            except FileExistsError:
                if self.is_lock_holder(key, holder):
                    return True  # held already, by this holder
                continue  # another holder took it first: wait again
            finally:
                private.unlink(missing_ok=True)
            self._locks[key] = {"holder": holder, "expiration": expiration, "path": path}
            return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return self.acquire_lock(key, holder, acquire_timeout, hold_timeout)

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
        if info is None:  # an older version's kill between creating and writing the file
            if time.time() - path.stat().st_mtime > 10:
                path.unlink(missing_ok=True)
                self._locks.pop(key, None)
                return False
            return True
        if info.get("host") == socket.gethostname() and not _holder_runs(info):
            path.unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def _holder_runs(info: dict) -> bool:
    """Whether the process a lock file names still runs (``process``: ``pid:start``; a
    bare ``pid`` from an older version is checked by number). A lock naming no process
    was not written by this manager: it is kept."""
    if isinstance(info.get("process"), str):
        return process_running(info["process"])
    pid = info.get("pid")
    if not isinstance(pid, int):
        return True
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
