"""After a crash or a stop: no process of the run is left, its runs are Crashed in the
Prefect database, and the rerun says which run it resumed and computes only the missing
shards, giving the χ of an uninterrupted run.

Commands run as a user runs them: ``python -m flows.cli ...`` in a session of its own (a
shell job), with no ``PREFECT_API_URL``, so that each starts its own Prefect server
against one Prefect home; the test then signals the command's whole process group.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from flows.cli import main
from flows.command_runs import RESUME_HINT
from patterning_core.model.checkpoints import list_checkpoints
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import open_chi

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TOY = {"kind": "toy-mlp", "n": 128, "d_in": 3, "hidden": 4, "probes": 5}
TOY_SAMPLER = SamplerConfig(
    step_size=1e-4,
    n_beta=20.0,
    localization=100.0,
    num_chains=3,
    num_draws=150,
    num_burnin=3,
    batch_size=16,
    seed=2,
).to_dict()
TOY_SHARDS = 3 * 3  # (2 component groups + the full run) × 3 chains


# ----------------------------------------------------------------------------- helpers


def home_processes(home: Path) -> list[psutil.Process]:
    """Processes of this user working for the project home ``home``: a command, its Dask
    workers, its Prefect server and the server's watchdog all carry it."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if str(home) in (env.get("PATTERNING_HOME"), env.get("PATTERNING_SERVICE_HOME")):
            found.append(proc)
    return found


def wait_until_gone(home: Path, timeout: float = 60.0) -> float:
    """Seconds until no process of ``home`` is left (fails after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not home_processes(home):
            return time.monotonic() - started
        time.sleep(0.1)
    left = []
    for proc in home_processes(home):
        try:
            left.append((proc.pid, " ".join(proc.cmdline()[:6])))
        except psutil.Error:
            continue
    raise AssertionError(f"still running {timeout:.0f} s later: {left}")


def complete_units(store: Path, step: int) -> int:
    """Completion records of (component, chain) and full runs: cheap enough to poll."""
    from patterning_core.store.chi_store import completed

    try:
        state = completed(store, step)
    except Exception:  # not created yet, or being created
        return 0
    return int(state["restricted"].sum() + state["full"].sum())


def complete_shards(store: Path, workload: dict, checkpoint: dict, sampler: dict) -> int:
    from flows.susceptibilities import plan_shards

    digests = {str(checkpoint["step"]): ""}
    return plan_shards(str(store), "", workload, [checkpoint], digests, sampler, None, 1)[1]


def reference_chi(
    tmp_path: Path, workload: dict, checkpoint: dict, sampler: dict, monkeypatch
) -> np.ndarray:
    """χ from every shard computed here, one after the other, without Prefect."""
    import tasks.susceptibility as ts
    from flows.runtime import file_digest
    from flows.susceptibilities import plan_shards

    monkeypatch.setattr(ts, "get_run_logger", lambda: logging.getLogger("reference"))
    store = str(tmp_path / "reference.zarr")
    info = ts.prepare_store.fn(store, workload, sampler, [checkpoint])
    digests = {str(checkpoint["step"]): file_digest(checkpoint.get("path"))}
    todo, _ = plan_shards(
        store, info["store_id"], workload, [checkpoint], digests, sampler, None, 1
    )
    for shard in todo:
        ts.susceptibility_shard.fn(**shard)
    ts.assemble.fn(store, checkpoint["step"])
    return open_chi(store)["chi"].values


def database(prefect_home: Path) -> tuple[list[dict], list[str]]:
    """Flow runs (oldest first) and the states of all task runs, from Prefect's database."""
    with sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        runs = db.execute(
            "SELECT id, name, state_type, tags, parent_task_run_id FROM flow_run ORDER BY created"
        ).fetchall()
        tasks = [r[0] for r in db.execute("SELECT state_type FROM task_run")]
    return [dict(r, tags=json.loads(r["tags"])) for r in runs], tasks


def top_runs(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["parent_task_run_id"] is None]


def unfinished(runs: list[dict], tasks: list[str]) -> list[str]:
    return [r["name"] for r in runs if r["state_type"] not in FINAL] + [
        f"task run {t}" for t in tasks if t not in FINAL
    ]


class Command:
    """``patterning ARGS`` in a session of its own, for the project home
    ``tmp_path/home`` and the Prefect home ``tmp_path/prefect``."""

    def __init__(self, tmp_path: Path, args: list[str], index: int):
        env = {
            **os.environ,
            "PATTERNING_HOME": str(tmp_path / "home"),
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.out, self.err = tmp_path / f"command-{index}.out", tmp_path / f"command-{index}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", *args],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.out.read_text()

    def tail(self) -> str:
        return f"{self.output()[-3000:]}\n--- stderr:\n{self.err.read_text()[-3000:]}"

    def wait_for(self, condition, what: str, timeout: float = 400.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"ended before {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s:\n{self.tail()}"
            time.sleep(0.1)

    def signal_group(self, signum: int) -> int:
        os.killpg(self.proc.pid, signum)
        return self.proc.wait(timeout=300)

    def finish(self) -> str:
        assert self.proc.wait(timeout=600) == 0, self.tail()
        return self.output()


# ----------------------------------------------------------------------------- services

PARENT = """
import sys, time
from pathlib import Path
from flows.server import _spawn
print(_spawn(["sleep", "600"], Path(sys.argv[1]), owned=True), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_service_a_command_starts_ends_with_the_command(tmp_path, signum):
    """Whatever ends a command (here its whole process group is signalled), the service
    it started for itself (``flows.guard`` watching it) ends within seconds."""
    home = (tmp_path / "home").resolve()
    env = {**os.environ, "PATTERNING_HOME": str(home)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "service.log")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    guard = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while not psutil.Process(guard).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    (service,) = psutil.Process(guard).children()
    assert service.environ()["PATTERNING_SERVICE_HOME"] == str(home)
    assert os.getpgid(service.pid) != os.getpgid(parent.pid)  # out of reach of the group
    os.killpg(parent.pid, signum)
    parent.wait(timeout=30)
    assert wait_until_gone(home, timeout=30) < 10


def fake_service(tmp_path: Path, argv: list[str], env: dict) -> subprocess.Popen:
    """A process whose command line reads ``ARGV[0] ARGV[1:]`` (e.g. ``prefect server
    start``), as a leftover service's would."""
    script = tmp_path / "bin" / argv[0]
    if not script.exists():  # never rewritten: a shell starting on it would read it empty
        script.parent.mkdir(exist_ok=True)
        partial = script.with_suffix(".partial")
        partial.write_text("#!/bin/sh\nsleep 600\n")
        partial.chmod(0o755)
        partial.replace(script)
    return subprocess.Popen(
        [str(script), *argv[1:]], env={**os.environ, **env}, start_new_session=True
    )


def test_status_reports_services_left_behind_and_stop_ends_them(tmp_path, monkeypatch, capsys):
    from flows.server import end_orphaned_services
    from tasks.processes import process_key

    home = (tmp_path / "home").resolve()
    home.mkdir()
    port = ["--host", "127.0.0.1", "--port", "1"]
    services = {
        # owned by a command that is gone (pid 1 did not start at time 0)
        "orphan": fake_service(
            tmp_path,
            ["prefect", "server", "start", *port],
            {"PATTERNING_SERVICE_HOME": str(home), "PATTERNING_SERVICE_OWNER": "1:0.00"},
        ),
        # started before services recorded their owner: found by $PATTERNING_HOME
        "unowned": fake_service(
            tmp_path, ["dask", "scheduler", *port], {"PATTERNING_HOME": str(home)}
        ),
        # owned by a command still running (this process)
        "in use": fake_service(
            tmp_path,
            ["prefect", "server", "start", "--port", "2"],
            {
                "PATTERNING_SERVICE_HOME": str(home),
                "PATTERNING_SERVICE_OWNER": process_key(os.getpid()),
            },
        ),
        # another project home's
        "other": fake_service(
            tmp_path,
            ["prefect", "server", "start", "--port", "3"],
            {"PATTERNING_SERVICE_HOME": str(tmp_path / "elsewhere")},
        ),
    }
    monkeypatch.setenv("PATTERNING_HOME", str(home))
    try:
        deadline = time.monotonic() + 30
        while len(home_processes(home)) < 3 * 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # each fake is a shell and its sleep
        assert main(["server", "status"]) == 0
        out = capsys.readouterr().out
        assert "Prefect server: down" in out
        orphan, unowned, in_use = (services[k].pid for k in ("orphan", "unowned", "in use"))
        assert (
            f"Prefect server at http://127.0.0.1:1/api (pid {orphan}): left behind by a "
            "command that ended (pid 1)" in out
        )
        assert f"Dask scheduler at tcp://127.0.0.1:1 (pid {unowned}): left behind, no " in out
        assert f"(pid {in_use}): in use by a running command (pid {os.getpid()})" in out
        assert f"pid {services['other'].pid}" not in out
        assert "`patterning server stop` ends those left behind." in out

        # The next command ends what a command that is gone left; the rest stays.
        assert [s["pid"] for s in end_orphaned_services()] == [orphan]
        assert services["orphan"].wait(timeout=30) is not None
        assert main(["server", "stop"]) == 0
        out = capsys.readouterr().out
        assert f"stopped Dask scheduler at tcp://127.0.0.1:1 (pid {unowned})" in out
        assert f"left running Prefect server at http://127.0.0.1:2/api (pid {in_use})" in out
        assert services["unowned"].wait(timeout=30) is not None
        assert services["in use"].poll() is None and services["other"].poll() is None
    finally:
        for proc in services.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ----------------------------------------------------------------------------- the ledger


def test_the_ledger_resumes_the_newest_ended_run_and_forgets_old_entries(monkeypatch):
    """Which entry a rerun takes over, and the ledger's housekeeping (no Prefect needed)."""
    import socket

    from flows import command_runs as cr
    from tasks.processes import process_key

    monkeypatch.setattr(cr, "ledger_dir", lambda: Path(os.environ["PATTERNING_HOME"]) / "led")
    gone, alive = "1:0.00", process_key(os.getpid())  # pid 1 did not start at time 0
    key = cr.resume_key("pipeline", {"preset": "tiny", "out_dir": "x", "n_workers": 2})
    assert key == cr.resume_key("pipeline", {"preset": "tiny", "out_dir": "x", "n_workers": 4})
    assert key != cr.resume_key("pipeline", {"preset": "tiny", "out_dir": "y", "n_workers": 2})
    now = time.time()

    def entry(name: str, process: str, started: float, **more) -> Path:
        path = cr.ledger_dir() / f"{name}.json"
        record = {"host": socket.gethostname(), "process": process, "database": "db"}
        cr._write(path, record | {"key": key, "started": started, "flow_run_id": name} | more)
        return path

    older, newer = entry("older", gone, now - 20), entry("newer", gone, now - 10)
    running = entry("running", alive, now)
    other_db = entry("other-db", gone, now - 5, database="elsewhere")
    failed_here = entry("failed", alive, now - 1, key="other", ended=True)
    ancient = entry("ancient", gone, now - cr.KEEP_S - 1, database="elsewhere")
    claimed = entry("claimed", gone, now - 1, database="elsewhere")
    ended = subprocess.Popen(["true"])
    ended.wait()
    claimed.rename(claimed.with_name(f"claimed.json.{ended.pid}.claim"))  # by a command gone

    assert cr._take_resumable("db", key)["flow_run_id"] == "newer"
    assert not older.exists() and not newer.exists() and running.exists() and other_db.exists()
    assert cr._take_resumable("db", "other")["flow_run_id"] == "failed"
    assert not failed_here.exists()
    assert cr.settle_ended_commands("nothing to settle") == []  # never reaches Prefect
    assert not ancient.exists() and claimed.exists() and other_db.exists()


# ----------------------------------------------------------------------------- runs


def kill_then_terminate(
    tmp_path: Path,
    args: list[str],
    store: Path,
    workload: dict,
    sampler: dict,
    shards: int,
    checkpoint_of,
) -> dict:
    """Run ``patterning ARGS`` twice, each command with its own Prefect server on one Prefect
    database: SIGKILL to the first command's process group once a shard is complete, and
    SIGTERM to the second's once it completed one more. Checks what each stop leaves and
    what the rerun says and records. ``checkpoint_of(home)``: the checkpoint χ is
    estimated at, once it exists. Returns the checkpoint, the number of shards complete
    after the second stop, and the second command's top flow run (a row of ``database``)."""
    home, prefect_home = tmp_path / "home", tmp_path / "prefect"

    # 1. SIGKILL: nothing of the command is left; its runs stay Running for now.
    first = Command(tmp_path, args, 1)
    checkpoint = None

    def some_complete() -> bool:
        nonlocal checkpoint
        checkpoint = checkpoint or checkpoint_of(home)
        return checkpoint is not None and complete_units(store, checkpoint["step"]) >= 1

    first.wait_for(some_complete, "completed shard")
    assert first.signal_group(signal.SIGKILL) == -signal.SIGKILL
    assert wait_until_gone(home) < 15  # the Prefect server the command started included
    killed = complete_shards(store, workload, checkpoint, sampler)
    assert 1 <= killed < shards, "the kill must land mid-run for this test to mean much"
    runs, tasks = database(prefect_home)
    assert unfinished(runs, tasks), "a killed run stays Running until a command marks it"
    (killed_run,) = top_runs(runs)

    # 2. The rerun marks those Crashed and resumes; SIGTERM to its process group.
    units = complete_units(store, checkpoint["step"])
    second = Command(tmp_path, args, 2)
    second.wait_for(lambda: complete_units(store, checkpoint["step"]) > units, "new shard")
    assert second.signal_group(signal.SIGTERM) == 128 + signal.SIGTERM
    assert wait_until_gone(home) < 15
    said = second.output()
    assert "marked Crashed: " in said
    assert f"resuming flow run {killed_run['name']} ({killed_run['id']}, Crashed)" in said
    assert said.endswith(f"\ninterrupted (SIGTERM): {RESUME_HINT}\n")
    planned = f"{shards - killed} shards to compute, {killed} already complete in the store"
    assert planned in second.err.read_text()  # the rerun computes only the missing shards
    terminated = complete_shards(store, workload, checkpoint, sampler)
    assert killed < terminated < shards
    runs, tasks = database(prefect_home)
    assert not unfinished(runs, tasks), f"not in a final state: {unfinished(runs, tasks)}"
    assert {r["state_type"] for r in runs} == {"CRASHED"}
    before, terminated_run = top_runs(runs)
    assert before["id"] == killed_run["id"]
    assert f"resumed-from:{killed_run['id']}" in terminated_run["tags"]
    return {"checkpoint": checkpoint, "terminated": terminated, "run": terminated_run}


def assert_complete_shards_equal(store: Path, reference: Path, step: int) -> None:
    """The statistics of every shard complete in ``store`` are bit for bit ``reference``'s."""
    import zarr

    from patterning_core.store.chi_store import _FULL, _RESTRICTED, completed

    state = completed(store, step, verify=True)
    ours, theirs = zarr.open_group(store, mode="r"), zarr.open_group(reference, mode="r")
    steps = list(open_chi(store).checkpoint.values)
    assert steps == list(open_chi(reference).checkpoint.values)
    index = steps.index(step)
    for names, done in ((_RESTRICTED, state["restricted"]), (_FULL, state["full"])):
        for name in names:
            np.testing.assert_array_equal(ours[name][index][done], theirs[name][index][done])


@pytest.mark.timeout(900)
def test_killed_and_terminated_commands_leave_nothing_running(tmp_path, monkeypatch):
    """`patterning run susceptibilities` on a toy workload, killed (SIGKILL to its process
    group), then rerun and stopped (SIGTERM to its process group). After each stop no
    process of the command is left, its Prefect server included; the killed run is marked
    Crashed when the rerun starts, the stopped one as it stops (exit code 143, one line
    on how to resume); the rerun names the run it resumes, is tagged with it, plans only
    the missing shards, and every shard complete in the store is bit for bit that of an
    uninterrupted run. (The test marked slow also runs the third command, to the end.)"""
    config = tmp_path / "toy.json"
    store = tmp_path / "chi.zarr"
    checkpoint = {"step": 0, "path": None}
    config.write_text(
        json.dumps(
            {"store": str(store), "workload": TOY, "checkpoints": [checkpoint]}
            | {"sampler": TOY_SAMPLER}
        )
    )
    args = ["run", "susceptibilities", "--config", str(config), "--workers", "1"]
    kill_then_terminate(tmp_path, args, store, TOY, TOY_SAMPLER, TOY_SHARDS, lambda _: checkpoint)
    reference_chi(tmp_path, TOY, checkpoint, TOY_SAMPLER, monkeypatch)
    assert_complete_shards_equal(store, tmp_path / "reference.zarr", 0)


# ----------------------------------------------------------------------------- the tiny preset

DATA = {"source": "synthetic", "preset": "tiny", "n_seqs": 256}
TINY_SAMPLER = SamplerConfig(
    step_size=1e-3, n_beta=30.0, localization=300.0, num_chains=2, num_draws=40, batch_size=8
).to_dict()
TINY = {"kind": "transformer", "data": DATA, "sgld_seqs": 64, "probe_seqs": 2}
TINY_SHARDS = 5 * 2  # layer-0 heads, layer-1 heads, embed, unembed, full run × 2 chains


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killed_terminated_and_resumed_pipeline_on_the_tiny_preset(tmp_path, monkeypatch):
    """`patterning run pipeline` on the tiny preset (training, then χ in a subflow with its
    shards in a subflow of that: three levels of flow runs): killed, rerun and stopped as
    in the test above, then a third command runs to the end. It names the run it resumes
    and is tagged with it, computes only the missing shards, every run of the first two
    commands is Crashed and its own Completed, and χ is bit for bit that of an
    uninterrupted run."""
    home, prefect_home, out = tmp_path / "home", tmp_path / "prefect", tmp_path / "out"
    store = out / "chi.zarr"
    config = tmp_path / "tiny.json"
    pipeline = {"preset": "tiny", "data": DATA, "sampler": TINY_SAMPLER, "chi_checkpoints": [40]}
    pipeline |= {"train": {"steps": 40, "batch_size": 16, "checkpoint_steps": [0, 20, 40]}}
    pipeline |= {"sgld_seqs": 64, "probe_seqs": 2, "out_dir": str(out)}
    config.write_text(json.dumps(pipeline))
    args = ["run", "pipeline", "--config", str(config), "--workers", "1"]

    def checkpoint_of(home: Path) -> dict | None:
        run_dirs = list((home / "runs").glob("tiny-*"))
        found = dict(list_checkpoints(run_dirs[0])) if run_dirs else {}
        return {"step": 40, "path": str(found[40])} if 40 in found else None

    stopped = kill_then_terminate(
        tmp_path, args, store, TINY, TINY_SAMPLER, TINY_SHARDS, checkpoint_of
    )
    said = Command(tmp_path, args, 3).finish()
    run, complete = stopped["run"], stopped["terminated"]
    assert f"resuming flow run {run['name']} ({run['id']}, Crashed)" in said
    assert f"shards computed {TINY_SHARDS - complete}, already complete {complete};" in said
    runs, tasks = database(prefect_home)
    assert not unfinished(runs, tasks), f"not in a final state: {unfinished(runs, tasks)}"
    resumed = top_runs(runs)[-1]
    third = runs.index(resumed)  # oldest first: the first two commands' runs, then the third's
    assert {r["state_type"] for r in runs[:third]} == {"CRASHED"}
    assert {r["state_type"] for r in runs[third:]} == {"COMPLETED"}
    assert f"resumed-from:{run['id']}" in resumed["tags"]
    wait_until_gone(home)
    expected = reference_chi(tmp_path, TINY, stopped["checkpoint"], TINY_SAMPLER, monkeypatch)
    np.testing.assert_array_equal(open_chi(store)["chi"].values, expected)
