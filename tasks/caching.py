"""Where Prefect keeps cache records, results and locks, and the cache policies.

Prefect's default policy includes the flow-run id, so nothing would be reused across runs.
Expensive tasks use ``INPUTS + TASK_SOURCE`` (inputs include a content digest of the
checkpoint file and the χ store's identity) with SERIALIZABLE isolation and a file lock
manager: two runs that reach the same shard at once compute it once, and the second
reads the first one's record. Storage locations are ``pathlib.Path`` objects (a ``str``
would be read as the name of a storage block).
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel


def patterning_home() -> Path:
    """The project's working area (``$PATTERNING_HOME``, default ``./.patterning``)."""
    return Path(os.environ.get("PATTERNING_HOME", ".patterning")).resolve()


def cache_root() -> Path:
    return patterning_home() / "prefect-cache"


def result_storage() -> Path:
    return cache_root() / "results"


def expensive_task_policy() -> CachePolicy:
    """Cross-run memoization keyed on inputs and task source, one computation at a time."""
    root = cache_root()
    return (INPUTS + TASK_SOURCE).configure(
        key_storage=root / "keys",
        lock_manager=FileSystemLockManager(lock_files_directory=root / "locks"),
        isolation_level=IsolationLevel.SERIALIZABLE,
    )
