"""`patterning server start|status|stop`: services come up on 127.0.0.1 only, and go away."""

from __future__ import annotations

import psutil
import pytest

from flows.cli import main
from flows.runtime import ALLOCATOR_ENV
from flows.server import read_state, status


def listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addresses = set()
    for proc in procs:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


@pytest.mark.timeout(300)
def test_services_listen_on_loopback_only_and_stop(capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        assert main(["server", "start", "--workers", "1"]) == 0
        out = capsys.readouterr().out
        assert "Prefect UI   http://127.0.0.1:" in out and "Dask         tcp://127.0.0.1:" in out
        state = status()
        assert state["prefect_ok"] and state["dask_ok"]
        for key in ("prefect_pid", "dask_scheduler_pid", "dask_workers_pid"):
            addresses = listening_addresses(state[key])
            assert addresses, f"{key} listens nowhere"
            assert addresses <= {"127.0.0.1"}, f"{key} listens on {addresses}"
        workers = psutil.Process(state["dask_workers_pid"]).children(recursive=True)
        assert workers
        for proc in workers:
            env = proc.environ()
            assert env.get("MALLOC_TRIM_THRESHOLD_") == ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]
        assert main(["server", "status"]) == 0
        assert "up at http://127.0.0.1" in capsys.readouterr().out
    finally:
        pids = [
            read_state().get(k) for k in ("prefect_pid", "dask_scheduler_pid", "dask_workers_pid")
        ]
        main(["server", "stop"])
    assert not any(
        p and psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
    )
    assert not status()["prefect_ok"]


def test_flow_clusters_listen_on_loopback_only(monkeypatch):
    """The local Dask cluster a flow creates (make_task_runner's settings): loopback only,
    and its workers start with our allocator settings, not Dask's MALLOC_TRIM_THRESHOLD_
    of 64 KiB (which made SGLD steps 2× slower), even when the environment has none."""
    import os

    from distributed import Client, LocalCluster

    from flows.runtime import ALLOCATOR_ENV, make_task_runner

    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    kwargs = make_task_runner(n_workers=1).cluster_kwargs
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        addresses = listening_addresses(os.getpid())
        seen = client.run(lambda: {k: os.environ.get(k) for k in ALLOCATOR_ENV})
    assert addresses == {"127.0.0.1"}
    assert list(seen.values()) == [ALLOCATOR_ENV]
