"""A local Prefect server and Dask cluster on 127.0.0.1, started and stopped by the CLI.

State lives in ``$PATTERNING_HOME/services.json`` (pids, URLs); logs beside it. Commands
that run flows use a running server if there is one, and otherwise start one for their
own duration (never Prefect's ephemeral mode: each Dask worker process would start its
own server).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from patterning_core.workspace import patterning_home

HOST = "127.0.0.1"


def _state_file() -> Path:
    return patterning_home() / "services.json"


def read_state() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(state: dict) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state, indent=2))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


def _spawn(args: list[str], log: Path, env: dict | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    return proc.pid


def start_prefect_server(port: int | None = None, timeout: float = 120.0) -> dict:
    """Start ``prefect server start`` on 127.0.0.1 in the background; wait until healthy."""
    port = port or _free_port()
    api_url = f"http://{HOST}:{port}/api"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    if env.get("PREFECT_HOME"):  # Prefect does not create missing parent folders
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    log = patterning_home() / "prefect-server.log"
    pid = _spawn(
        [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)], log, env
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if api_healthy(api_url):
            return {"prefect_pid": pid, "api_url": api_url, "ui_url": f"http://{HOST}:{port}"}
        if not _alive(pid):
            break
        time.sleep(0.5)
    _kill(pid)
    raise RuntimeError(f"the Prefect server did not start within {timeout:.0f} s; see {log}.")


def start_dask_cluster(
    n_workers: int = 2, threads_per_worker: int = 1, timeout: float = 60.0
) -> dict:
    """Start a Dask scheduler and ``n_workers`` worker processes on 127.0.0.1 (with the
    allocator settings of ``runtime.worker_environment``)."""
    from flows.runtime import worker_environment

    port = _free_port()
    address = f"tcp://{HOST}:{port}"
    logs = patterning_home()
    scheduler = _spawn(
        [
            _bin("dask"),
            "scheduler",
            "--host",
            HOST,
            "--port",
            str(port),
            "--dashboard-address",
            f"{HOST}:0",
            "--no-show",
        ],
        logs / "dask-scheduler.log",
    )
    workers = _spawn(
        [
            _bin("dask"),
            "worker",
            address,
            "--host",
            HOST,
            "--nworkers",
            str(n_workers),
            "--nthreads",
            str(threads_per_worker),
            "--dashboard-address",
            f"{HOST}:0",
            "--no-dashboard",
        ],
        logs / "dask-workers.log",
        env={**os.environ, **worker_environment()},
    )
    deadline = time.time() + timeout
    from distributed import Client

    while time.time() < deadline:
        try:
            with Client(address, timeout=5) as client:
                if len(client.scheduler_info()["workers"]) >= n_workers:
                    return {
                        "dask_address": address,
                        "dask_scheduler_pid": scheduler,
                        "dask_workers_pid": workers,
                    }
        except OSError:
            pass
        time.sleep(0.5)
    _kill(workers)
    _kill(scheduler)
    raise RuntimeError(f"the Dask cluster did not start within {timeout:.0f} s; see {logs}.")


def _kill(pid: int | None) -> None:
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def start_services(n_workers: int = 2, with_dask: bool = True) -> dict:
    """Start (or find running) the local Prefect server and Dask cluster."""
    state = status()
    if not state.get("prefect_ok"):
        state.update(start_prefect_server())
    if with_dask and not state.get("dask_ok"):
        state.update(start_dask_cluster(n_workers))
    state = {k: v for k, v in state.items() if not k.endswith("_ok")}
    _write_state(state)
    return status()


def stop_services() -> dict:
    state = read_state()
    for key in ("dask_workers_pid", "dask_scheduler_pid", "prefect_pid"):
        _kill(state.get(key))
    _state_file().unlink(missing_ok=True)
    return state


def status() -> dict:
    state = read_state()
    state["prefect_ok"] = bool(state.get("api_url")) and api_healthy(state["api_url"])
    state["dask_ok"] = _alive(state.get("dask_scheduler_pid")) and _alive(
        state.get("dask_workers_pid")
    )
    return state


@contextlib.contextmanager
def _use_api(api_url: str) -> Iterator[str]:
    """Point this process (settings) and its children (environment) at ``api_url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield a Prefect API URL for the duration of a command.

    Uses ``$PREFECT_API_URL`` or a server started with ``patterning server start``;
    otherwise starts a server for the duration and stops it afterwards.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    state = status()
    if state.get("prefect_ok"):
        with _use_api(state["api_url"]) as url:
            yield url
        return
    started = start_prefect_server()
    try:
        with _use_api(started["api_url"]) as url:
            try:
                yield url
            finally:
                _send_pending_logs()
    finally:
        _kill(started["prefect_pid"])


def _send_pending_logs() -> None:
    """Send the logs Prefect still holds while the server that takes them is up (else they
    are sent at exit, to a stopped server: "Error logging to API")."""
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=10)
