"""Cache locks die with their holder, so a killed run never blocks the next one."""

from __future__ import annotations

import json
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


def test_a_lock_file_names_its_holder_from_the_moment_it_exists(tmp_path):
    """Another process takes and releases one lock over and over; every time this one finds
    the lock file, the file already names the process that holds it. So a kill at any
    moment of an acquisition leaves either no lock or one whose holder is gone, free at
    once (a file found empty would hold for 10 s; one naming no process, forever: such a
    lock once stopped a resumed run for good)."""
    code = (
        "from tasks.caching import ProcessAwareLockManager as M; import pathlib;"
        f"m = M(lock_files_directory=pathlib.Path({str(tmp_path)!r}));"
        "print('ready', flush=True)\n"
        "for _ in range(3000):\n"
        "    m.acquire_lock('shard', holder='worker'); m.release_lock('shard', holder='worker')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    lock, found, without_holder = tmp_path / "shard.lock", 0, []
    while proc.poll() is None:
        try:
            text = lock.read_text()
        except FileNotFoundError:
            continue
        found += 1
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            info = {}
        if not isinstance(info.get("process"), str):
            without_holder.append(text)
    assert proc.returncode == 0
    assert found >= 100, f"the lock was seen only {found} times: the check means little"
    assert not without_holder, f"{len(without_holder)} of {found}, e.g. {without_holder[:3]}"
