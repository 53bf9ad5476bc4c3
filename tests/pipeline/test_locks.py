"""Cache locks die with their holder, so a killed run never blocks the next one."""

from __future__ import annotations

import subprocess
import sys

from tasks.caching import ProcessAwareLockManager


def test_lock_of_a_dead_process_is_stale(tmp_path):
    manager = ProcessAwareLockManager(lock_files_directory=tmp_path)
    code = (
        "from tasks.caching import ProcessAwareLockManager as M; import pathlib, sys;"
        f"m = M(lock_files_directory=pathlib.Path({str(tmp_path)!r}));"
        "assert m.acquire_lock('shard', holder='other')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding the lock
    assert (tmp_path / "shard.lock").exists()
    assert not manager.is_locked("shard")
    assert manager.acquire_lock("shard", holder="me", acquire_timeout=1)


def test_lock_of_a_live_process_holds(tmp_path):
    manager = ProcessAwareLockManager(lock_files_directory=tmp_path)
    assert manager.acquire_lock("shard", holder="me")
    other = ProcessAwareLockManager(lock_files_directory=tmp_path)
    assert other.is_locked("shard")
    assert not other.acquire_lock("shard", holder="you", acquire_timeout=0.3)
    manager.release_lock("shard", holder="me")
    assert not other.is_locked("shard")


def test_lock_file_being_created_reads_as_locked_not_as_an_error(tmp_path):
    """Another process has just created the lock file and not yet written it (Prefect
    touches, then writes): checking or acquiring the lock waits, it does not raise."""
    lock = tmp_path / "shard.lock"
    lock.touch()
    manager = ProcessAwareLockManager(lock_files_directory=tmp_path)
    assert manager.is_locked("shard")
    assert not manager.is_lock_holder("shard", holder="me")
    assert not manager.acquire_lock("shard", holder="me", acquire_timeout=0.3)
    lock.write_bytes(b'{"holder": "other", "exp')  # half-written
    assert manager.is_locked("shard")
    assert not manager.is_lock_holder("shard", holder="me")
    lock.unlink()  # the holder releases it
    assert manager.acquire_lock("shard", holder="me", acquire_timeout=1)
    assert manager.is_lock_holder("shard", holder="me")
    assert not list(tmp_path.glob("*.tmp"))
