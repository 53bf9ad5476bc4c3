"""The flow runs each command starts: a run whose command is gone is marked Crashed, and
the rerun of the same command says which run it resumes.

A command that runs a flow (``patterning demo``, ``patterning run ...``) writes a ledger
entry, ``$PATTERNING_HOME/commands/<session>.json``: its host and process (pid and start
time), the Prefect database it reports to, a digest of the flow and its parameters, and,
once the flow runs, the flow run's id. The entry is removed when the flow completes.

- Killed (SIGKILL, out of memory, power loss): the run and its subflow and task runs stay
  Running in the database. The next command against the same database finds the entry,
  sees its process gone, and marks every run of that tree that is not final Crashed
  (``settle_ended_commands``, called by ``flows.server.prefect_api`` as soon as the API
  answers, and by ``patterning server start``).
- Interrupted (Ctrl-C, SIGTERM, SIGHUP): Prefect's engine marks the flow runs Crashed; the
  command then marks Crashed what it could not (task runs left Running on workers that
  died), stops its services and exits non-zero with one line saying how to resume
  (``stop_signals`` turns SIGTERM and SIGHUP into the same path as Ctrl-C).
- Rerun: the same flow with the same parameters (``resume_key``; the Dask address and
  worker count do not count) finds the ended command's entry, prints which run it
  resumes, and tags its own flow run ``resumed-from:<flow run id>`` (shown in the UI).
  What is computed again is decided by the χ store alone, as before: only shards not
  complete there.

Prefect's own zombie detection (flow run heartbeats and an automation that marks runs
Crashed when beats stop) covers runs started by workers and deployments; flows called
in-process by a command send no heartbeats, hence this ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from patterning_core.workspace import patterning_home, settings_digest

RUNTIME_PARAMETERS = ("dask_address", "n_workers", "threads_per_worker")
RESUMED_TAG = "resumed-from:"
KEEP_S = 30 * 24 * 3600  # entries of commands gone this long are dropped
RESUME_HINT = "finished shards are kept; run the same command to resume."


def ledger_dir() -> Path:
    return patterning_home() / "commands"


def resume_key(flow_name: str, parameters: dict) -> str:
    """The same flow with the same parameters (the runtime ones aside) resumes a run."""

    def without_runtime(value: Any) -> Any:
        if hasattr(value, "model_dump"):  # a flow's parameter model (flows/parameters.py)
            value = value.model_dump(mode="json")
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in RUNTIME_PARAMETERS}
        return value

    kept = {k: without_runtime(v) for k, v in parameters.items() if k not in RUNTIME_PARAMETERS}
    return settings_digest({"flow": flow_name, "parameters": kept}, length=16)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(entry, indent=1))
    os.replace(partial, path)


def _entries() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(ledger_dir().glob("*.json")):
        entry = _read(path)
        if entry is not None:
            found.append((path, entry))
    return found


def _ended(entry: dict) -> bool:
    """Whether the entry's command is over: it said so (its flow raised), or its process
    is gone (entries of other hosts: unknown, never)."""
    from tasks.processes import process_running

    if entry.get("ended"):
        return True
    return entry.get("host") == socket.gethostname() and not process_running(entry["process"])


# ----------------------------------------------------------------------------- Prefect


def _not_final():
    from prefect.client.schemas.objects import StateType

    return [
        StateType.SCHEDULED,
        StateType.PENDING,
        StateType.RUNNING,
        StateType.PAUSED,
        StateType.CANCELLING,
    ]


def crash_run_tree(client: Any, root: str, message: str) -> list[str]:
    """Mark Crashed the flow run ``root``, its subflow runs (recursively) and their task
    runs, each that is not in a final state; return the names of the flow runs marked."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.states import Crashed

    ids = [uuid.UUID(root)]
    frontier = list(ids)
    while frontier:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
            )
        )
        frontier = [c.id for c in children if c.id not in ids]
        ids += frontier
    tree = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    unfinished = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=ids),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_not_final())),
        )
    )
    seen: set = set()
    while True:  # task runs, a page at a time (each page leaves the filter once marked)
        page = client.read_task_runs(
            flow_run_filter=tree,
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=_not_final()))
            ),
            limit=200,
        )
        page = [t for t in page if t.id not in seen]
        if not page:
            break
        for task_run in page:
            seen.add(task_run.id)
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    for run in unfinished:
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return [run.name for run in unfinished]


def _flow_run_state(client: Any, flow_run_id: str) -> str | None:
    try:
        run = client.read_flow_run(uuid.UUID(flow_run_id))
    except Exception:  # deleted from the database, or another database
        return None
    return run.state.name if run.state else None


def _settle(client: Any, path: Path, entry: dict, message: str) -> dict:
    """Mark what is left of the entry's run Crashed; record its final state."""
    marked: list[str] = []
    if entry.get("flow_run_id"):
        marked = crash_run_tree(client, entry["flow_run_id"], message)
        entry["state"] = _flow_run_state(client, entry["flow_run_id"])
    entry.update(settled=time.time(), marked=marked)
    _write(path, entry)
    return entry


def _claim(path: Path) -> Path | None:
    """Take the entry at ``path`` for this process (None: another one took it first)."""
    claimed = path.with_name(f"{path.name}.{os.getpid()}.claim")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def _release_abandoned_claims() -> None:
    """Entries claimed by a command that died before it put them back."""
    for claimed in ledger_dir().glob("*.json.*.claim"):
        pid = int(claimed.name.split(".")[-2])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, claimed.with_name(claimed.name.split(".json.")[0] + ".json"))


def settle_ended_commands(database: str | None) -> list[dict]:
    """Mark Crashed the runs that commands now gone left unfinished in ``database`` (their
    flow run trees: see ``crash_run_tree``); print one line per command whose runs were
    marked. Entries older than ``KEEP_S`` whose command is gone are removed. Returns the
    entries settled now."""
    from prefect.client.orchestration import get_client

    _release_abandoned_claims()
    pending = []
    for path, entry in _entries():
        if not _ended(entry):
            continue
        if time.time() - entry.get("started", 0.0) > KEEP_S:
            path.unlink(missing_ok=True)
        elif not entry.get("settled") and entry.get("database") == database:
            pending.append(path)
    if not pending:
        return []
    settled = []
    with get_client(sync_client=True) as client:
        for path in pending:
            claimed = _claim(path)
            entry = _read(claimed) if claimed else None
            if entry is None:  # another command is settling it
                continue
            message = (
                f"The command that ran this flow ({entry.get('command')}, pid "
                f"{entry['process'].partition(':')[0]} on {entry['host']}) ended without "
                "reporting a final state (killed, out of memory, or its machine stopped); "
                "marked Crashed when the next command started. Run the same command again "
                "to resume: finished shards are kept."
            )
            try:
                entry = _settle(client, path, entry, message)
            except BaseException:
                os.replace(claimed, path)  # unsettled: the next command tries again
                raise
            claimed.unlink(missing_ok=True)
            settled.append(entry)
            if entry["marked"]:
                print(
                    f"marked Crashed: {', '.join(entry['marked'])} (flow run "
                    f"{entry['flow_run_id']}), left running by `{entry.get('command')}`, "
                    "which ended"
                )
    return settled


def _take_resumable(database: str | None, key: str) -> dict | None:
    """The newest run of an ended command of the same flow and parameters; its entry
    (and those of older ones) leave the ledger: this command takes over (of two commands
    started at once, the one that removes an entry first)."""
    same = [
        (path, entry)
        for path, entry in _entries()
        if entry.get("database") == database and entry.get("key") == key and _ended(entry)
    ]
    same.sort(key=lambda pe: pe[1].get("started", 0.0))
    taken = []
    for path, entry in same:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            taken.append(entry)
    runs = [entry for entry in taken if entry.get("flow_run_id")]
    return runs[-1] if runs else None


# ----------------------------------------------------------------------------- commands


_COMMAND: list[str] = []  # the command's arguments, set by ``stop_signals``


def _command_line() -> str:
    return " ".join(["patterning", *_COMMAND])


def run_tracked(flow: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``flow(*args, **kwargs)`` as a command's flow: recorded in the ledger while it
    runs, tagged ``resumed-from:<id>`` when it takes over the run of an ended command.
    Outside ``flows.server.prefect_api`` it simply runs the flow."""
    import inspect

    from prefect import tags

    from flows.server import current_database
    from tasks.processes import process_key

    database = current_database()
    if database is None:
        return flow(*args, **kwargs)
    parameters = dict(inspect.signature(flow.fn).bind(*args, **kwargs).arguments)
    key = resume_key(flow.name, parameters)
    previous = _take_resumable(database, key)
    extra_tags = []
    if previous:
        state = previous.get("state") or "unfinished"
        print(
            f"resuming flow run {previous.get('flow_run_name')} ({previous['flow_run_id']}, "
            f"{state}); this run is tagged {RESUMED_TAG}{previous['flow_run_id']}"
        )
        extra_tags.append(f"{RESUMED_TAG}{previous['flow_run_id']}")
    session = uuid.uuid4().hex[:12]
    path = ledger_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{session}.json"
    entry = {
        "session": session,
        "host": socket.gethostname(),
        "process": process_key(os.getpid()),
        "database": database,
        "key": key,
        "flow": flow.name,
        "command": _command_line(),
        "started": time.time(),
        "flow_run_id": None,
        "resumed_from": previous["flow_run_id"] if previous else None,
    }
    _write(path, entry)

    def record_in_command_ledger(_flow: Any, flow_run: Any, _state: Any) -> None:
        if entry["flow_run_id"] is None:
            entry.update(flow_run_id=str(flow_run.id), flow_run_name=flow_run.name)
            _write(path, entry)

    tracked = flow.with_options(on_running=[*flow.on_running_hooks, record_in_command_ledger])
    try:
        with tags(*extra_tags):
            result = tracked(*args, **kwargs)
    except BaseException as exc:
        entry["ended"] = True  # the command ends with this exception; a rerun takes over
        _write(path, entry)
        if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, exit: mark what is left
            _settle_interrupted(path, entry, exc)
        raise
    path.unlink(missing_ok=True)
    return result


def _settle_interrupted(path: Path, entry: dict, exc: BaseException) -> None:
    from prefect.client.orchestration import get_client

    how = getattr(exc, "signal", None) or getattr(exc, "signum", None)
    what = signal.Signals(how).name if how else type(exc).__name__
    message = (
        f"The command that ran this flow ({entry['command']}) was interrupted ({what}); "
        "run the same command again to resume: finished shards are kept."
    )
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        _settle(client, path, entry, message)


def interrupted_message(err: KeyboardInterrupt) -> str:
    """The one line a command prints when Ctrl-C or a signal stopped it."""
    signum = getattr(err, "signum", signal.SIGINT)
    return f"interrupted ({signal.Signals(signum).name}): {RESUME_HINT}"


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal (``signum``)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals(command: list[str]) -> Iterator[None]:
    """For the command ``patterning COMMAND...``: SIGTERM and SIGHUP stop it the way
    Ctrl-C does, as ``Interrupted``, a ``KeyboardInterrupt`` with the signal's number
    (Prefect's engine, which handles SIGTERM itself while a flow runs, raises
    ``TerminationSignal``: turned into the same). Signal handlers only in the main
    thread."""
    _COMMAND[:] = command

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous: dict[int, Callable | int | None] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    except BaseException as exc:
        termination = getattr(sys.modules.get("prefect.exceptions"), "TerminationSignal", ())
        if termination and isinstance(exc, termination):
            raise Interrupted(exc.signal) from exc
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
