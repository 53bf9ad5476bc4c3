"""A local Prefect server and Dask cluster on 127.0.0.1, started and stopped by the CLI.

State lives in ``$PATTERNING_HOME/services.json`` (pids, URLs); logs beside it. Commands
that run flows use a running server if there is one, and otherwise start one for their
own duration (never Prefect's ephemeral mode: each Dask worker process would start its
own server).

Lifetimes. Services started by ``patterning server start`` stay until ``patterning server
stop``. A server a command starts for itself runs under a watchdog (``flows.guard``) that
ends it when the command's process is gone, however it ended (SIGKILL included); the
command's own Dask cluster is made of its child processes and dies with it. Every service
process carries ``$PATTERNING_HOME`` in its environment (and, when a command owns it, the
owner's pid and start time), so :func:`find_services` finds all of them for this home,
including one a crash left behind, and ``patterning server stop`` ends those.
"""

from __future__ import annotations

import contextlib
import itertools
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

import psutil

from patterning_core.workspace import patterning_home
from tasks.processes import process_key, process_running

HOST = "127.0.0.1"
SERVICE_HOME_VAR = "PATTERNING_SERVICE_HOME"  # the home a service belongs to
SERVICE_OWNER_VAR = "PATTERNING_SERVICE_OWNER"  # pid:start time of the command owning it


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
    """Whether process ``pid`` runs (an exited child not yet reaped does not: it is reaped
    here, so that waiting for a stopped service takes no longer than its shutdown)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
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


def _spawn(args: list[str], log: Path, env: dict | None = None, owned: bool = False) -> int:
    """Start ``args`` in a session of its own (a Ctrl-C or a signal to the command's
    process group does not reach it); return the pid of the session's leader.

    ``owned``: the service belongs to this process and runs under ``flows.guard``, which
    ends it when this process is gone. Otherwise it runs until it is stopped.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**(os.environ if env is None else env), SERVICE_HOME_VAR: str(patterning_home())}
    if owned:
        env[SERVICE_OWNER_VAR] = process_key(os.getpid())
        args = [sys.executable, "-m", "flows.guard", str(os.getpid()), "--", *args]
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


def start_prefect_server(
    port: int | None = None, timeout: float = 120.0, owned: bool = False
) -> dict:
    """Start ``prefect server start`` on 127.0.0.1 in the background; wait until healthy.

    ``owned``: for this process's duration only (see ``_spawn``)."""
    port = port or _free_port()
    api_url = f"http://{HOST}:{port}/api"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    if env.get("PREFECT_HOME"):  # Prefect does not create missing parent folders
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    log = patterning_home() / "prefect-server.log"
    pid = _spawn(
        [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)],
        log,
        env,
        owned=owned,
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


def _kill(pid: int | None, grace: float = 10.0, watch: int | None = None) -> None:
    """SIGTERM the process group ``pid``; SIGKILL it if ``watch`` (default: ``pid``, the
    group's leader) still runs after ``grace`` seconds."""
    watch = watch or pid
    if not pid or not _alive(watch):
        return
    if pid == os.getpgid(0):  # never our own group
        raise RuntimeError(f"refusing to signal this process's own group {pid}")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(watch):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- finding services


def _service_kind(cmdline: list[str]) -> tuple[str, str] | None:
    """(kind, address) of a ``prefect server start`` or ``dask scheduler|worker`` command
    line; None for anything else (the guard included: its service is reported)."""
    if "flows.guard" in cmdline:
        return None
    for i, arg in enumerate(cmdline[:3]):
        name, rest = Path(arg).name, cmdline[i + 1 :]
        options = dict(itertools.pairwise(rest))
        host = options.get("--host", HOST)
        if name == "prefect" and rest[:2] == ["server", "start"]:
            return "Prefect server", f"http://{host}:{options.get('--port', '4200')}/api"
        if name == "dask" and rest[:1] == ["scheduler"]:
            return "Dask scheduler", f"tcp://{host}:{options.get('--port', '8786')}"
        if name == "dask" and rest[:1] == ["worker"]:
            return "Dask workers", rest[1] if len(rest) > 1 else "?"
    return None


def _home_of(proc: psutil.Process) -> Path | None:
    """The project home a service process belongs to: the one it was started for, else
    (a service started by an older version) its ``$PATTERNING_HOME``."""
    env = proc.environ()
    if SERVICE_HOME_VAR in env:
        return Path(env[SERVICE_HOME_VAR])
    if "PATTERNING_HOME" not in env:
        return None
    return (Path(proc.cwd()) / env["PATTERNING_HOME"]).resolve()


def _runs_a_service(pid: int) -> bool:
    """Whether ``pid`` still runs a Prefect server or Dask command (not a reused pid)."""
    try:
        return _alive(pid) and _service_kind(psutil.Process(pid).cmdline()) is not None
    except psutil.Error:
        return False


def find_services() -> list[dict]:
    """Every Prefect server and Dask scheduler/worker command of this user running for this
    project home, each with ``kind``, ``pid``, ``pgid``, ``address`` and ``role``:
    ``"server start"`` (started by ``patterning server start``), ``"command"`` (owned by a
    running command, ``owner`` its pid), or ``"orphan"`` (its command is gone, or no
    command and no ``patterning server start`` owns it)."""
    home = patterning_home()
    started = {
        read_state().get(k) for k in ("prefect_pid", "dask_scheduler_pid", "dask_workers_pid")
    }
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        kind = _service_kind(proc.info["cmdline"] or [])
        if kind is None:
            continue
        try:
            if _home_of(proc) != home or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            owner = proc.environ().get(SERVICE_OWNER_VAR)
            pgid = os.getpgid(proc.pid)
        except (psutil.Error, OSError):
            continue
        if proc.pid in started:
            role = "server start"
        elif owner and process_running(owner):
            role = "command"
        else:
            role = "orphan"
        found.append(
            {
                "kind": kind[0],
                "address": kind[1],
                "pid": proc.pid,
                "pgid": pgid,
                "role": role,
                "owner": int(owner.partition(":")[0]) if owner else None,
            }
        )
    return found


def end_services(services: list[dict]) -> list[dict]:
    """End each service's process group (never this process's own); return those ended."""
    ended = []
    for service in services:
        if service["pgid"] == os.getpgid(0):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(service["pid"])
                for child in [*proc.children(recursive=True), proc]:
                    child.kill()
        else:
            _kill(service["pgid"], watch=service["pid"])
        ended.append(service)
    return ended


def end_orphaned_services() -> list[dict]:
    """End the services that commands now gone had started for themselves (their
    watchdog normally ends them within a second; this catches one it could not, e.g. a
    watchdog killed with them)."""
    return end_services(
        [s for s in find_services() if s["role"] == "orphan" and s["owner"] is not None]
    )


def describe(service: dict) -> str:
    where = f"{service['kind']} at {service['address']} (pid {service['pid']})"
    if service["role"] == "server start":
        return f"{where}: started by `patterning server start`"
    if service["role"] == "command":
        return f"{where}: in use by a running command (pid {service['owner']})"
    if service["owner"] is not None:
        return f"{where}: left behind by a command that ended (pid {service['owner']})"
    return f"{where}: left behind, no command owns it"


# ----------------------------------------------------------------------------- the CLI's services


def start_services(n_workers: int = 2, with_dask: bool = True) -> dict:
    """Start (or find running) the local Prefect server and Dask cluster; they run until
    ``stop_services``. Runs whose command is gone are marked Crashed once the server is up."""
    state = status()
    if not state.get("prefect_ok"):
        state.update(start_prefect_server())
    if with_dask and not state.get("dask_ok"):
        state.update(start_dask_cluster(n_workers))
    state = {k: v for k, v in state.items() if not k.endswith("_ok")}
    _write_state(state)
    with _use_api(state["api_url"]):
        _settle_ended_commands(_database_for(state["api_url"]))
    return status()


def stop_services() -> dict:
    """End the services of ``patterning server start`` and every service of this home left
    behind by a command that is gone; leave those a running command uses. Returns
    ``{"ended": [...], "in_use": [...]}`` (see ``find_services``)."""
    state = read_state()
    found = find_services()
    known = {s["pid"] for s in found}
    ended = []
    for key, kind in (
        ("dask_workers_pid", "Dask workers"),
        ("dask_scheduler_pid", "Dask scheduler"),
        ("prefect_pid", "Prefect server"),
    ):
        pid = state.get(key)
        if pid and pid not in known and _runs_a_service(pid):  # started by an older version
            _kill(pid)
            address = (
                state.get("api_url") if kind == "Prefect server" else state.get("dask_address")
            )
            ended.append({"kind": kind, "address": address, "pid": pid, "role": "server start"})
    ended += end_services([s for s in found if s["role"] != "command"])
    _state_file().unlink(missing_ok=True)
    return {"ended": ended, "in_use": [s for s in found if s["role"] == "command"]}


def status() -> dict:
    """The services of ``patterning server start``: their state file, and whether the
    Prefect API answers (``prefect_ok``) and the Dask processes run (``dask_ok``)."""
    state = read_state()
    state["prefect_ok"] = bool(state.get("api_url")) and api_healthy(state["api_url"])
    state["dask_ok"] = _alive(state.get("dask_scheduler_pid")) and _alive(
        state.get("dask_workers_pid")
    )
    return state


def print_status() -> None:
    """``patterning server status``: the services of ``patterning server start``, then
    every other service found running for this home."""
    state = status()
    print(f"Prefect server: {'up at ' + state['api_url'] if state['prefect_ok'] else 'down'}")
    print(f"Dask cluster:   {'up at ' + state['dask_address'] if state['dask_ok'] else 'down'}")
    others = [s for s in find_services() if s["role"] != "server start"]
    if others:
        print(f"\nother services for {patterning_home()}:")
        for service in others:
            print(f"  {describe(service)}")
        if any(s["role"] == "orphan" for s in others):
            print("`patterning server stop` ends those left behind.")


def print_stop() -> None:
    """``patterning server stop``."""
    result = stop_services()
    for service in result["ended"]:
        print(f"stopped {describe(service)}")
    for service in result["in_use"]:
        print(f"left running {describe(service)}")
    if not result["ended"] and not result["in_use"]:
        print("nothing was running")


# ----------------------------------------------------------------------------- commands

_DATABASE: str | None = None  # identity of the Prefect database this command uses


def _database_for(api_url: str) -> str:
    """Which database a Prefect API serves: the one in ``$PREFECT_HOME`` when it is a
    server this project started, else the API's URL (someone else's server)."""
    from prefect.settings import PREFECT_HOME

    if api_url in (read_state().get("api_url"), _OWNED_API):
        return f"prefect-home:{Path(PREFECT_HOME.value()).expanduser().resolve()}"
    return f"api:{api_url}"


_OWNED_API: str | None = None


def current_database() -> str | None:
    """Identity of the Prefect database the running command uses (inside ``prefect_api``)."""
    return _DATABASE


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


def _settle_ended_commands(database: str) -> None:
    """Mark Crashed the runs of commands that ended without finishing them (see
    ``flows.command_runs``); a failure here is a warning, never a reason not to run."""
    from flows.command_runs import settle_ended_commands

    try:
        settle_ended_commands(database)
    except Exception as err:  # bookkeeping must not stop the command
        print(f"warning: could not mark the runs of ended commands as crashed: {err}")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield a Prefect API URL for the duration of a command.

    Uses ``$PREFECT_API_URL`` or a server started with ``patterning server start``;
    otherwise starts a server for the duration (under a watchdog that ends it if this
    process dies) and stops it afterwards. First ends services left behind by commands
    that are gone; once the API answers, marks Crashed the runs such commands left
    unfinished (``flows.command_runs``).
    """
    global _DATABASE, _OWNED_API
    for service in end_orphaned_services():
        print(f"ended {describe(service)}")
    started = None
    try:
        if os.environ.get("PREFECT_API_URL"):
            api = contextlib.nullcontext(os.environ["PREFECT_API_URL"])
        elif (state := status()).get("prefect_ok"):
            api = _use_api(state["api_url"])
        else:
            started = start_prefect_server(owned=True)
            _OWNED_API = started["api_url"]
            api = _use_api(started["api_url"])
        with api as url:
            _DATABASE = _database_for(url)
            _settle_ended_commands(_DATABASE)
            try:
                yield url
            finally:
                if started:
                    _send_pending_logs()
    finally:
        _DATABASE = _OWNED_API = None
        if started:
            _kill(started["prefect_pid"])


def _send_pending_logs() -> None:
    """Send the logs Prefect still holds while the server that takes them is up (else they
    are sent at exit, to a stopped server: "Error logging to API")."""
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=10)
