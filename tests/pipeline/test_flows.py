"""The susceptibilities flow end to end: local Dask cluster, store, resume, memoization."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.parameters import PipelineParameters, SusceptibilityParameters
from flows.susceptibilities import susceptibilities
from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import open_chi
from patterning_core.store.workloads import build_workload

WORKLOAD = {"kind": "toy-mlp", "n": 128, "d_in": 3, "hidden": 4, "probes": 5}
SAMPLER = SamplerConfig(
    step_size=1e-4,
    n_beta=20.0,
    localization=100.0,
    num_chains=2,
    num_draws=15,
    num_burnin=3,
    batch_size=16,
    seed=2,
).to_dict()


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def spawn_flow(store: str, sampler: dict, n_workers: int = 2, **popen):
    """Run the susceptibilities flow on checkpoint 0 of WORKLOAD in a child process that
    reports to the harness's server; it prints ``SUMMARY{json}`` when it finishes."""
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    code = (
        "import json, sys; from flows.susceptibilities import susceptibilities;"
        "a = json.loads(sys.argv[1]);"
        "from flows.parameters import SusceptibilityParameters as P;"
        "s = susceptibilities(P(store=a['store'], workload=a['workload'],"
        " checkpoints=[{'step': 0, 'path': None}], sampler=a['sampler'],"
        " n_workers=a['n_workers']));"
        "print('SUMMARY' + json.dumps(s))"
    )
    args = json.dumps(
        {"store": store, "workload": WORKLOAD, "sampler": sampler, "n_workers": n_workers}
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-c", code, args], env=env, **popen)


def test_flow_matches_direct_estimate_and_rerun_does_no_sampling(tmp_path, prefect_server):
    store = str(tmp_path / "chi.zarr")
    ckpts = [{"step": 0, "path": None}]
    first = susceptibilities(
        SusceptibilityParameters(
            store=store, workload=WORKLOAD, checkpoints=ckpts, sampler=SAMPLER, n_workers=2
        )
    )
    # 2 components (separate parameter groups) + full run, × 2 chains.
    assert first["computed"] == 6 and first["already_complete"] == 0
    work = build_workload(WORKLOAD)
    direct = estimate_susceptibilities(
        work.loss_fn,
        work.params,
        work.data,
        work.probes,
        work.components,
        SamplerConfig.from_dict(SAMPLER),
    )
    chi = open_chi(store)["chi"].sel(checkpoint=0)
    # Shards vmap one chain at a time: float32 rounding differs from the direct run.
    np.testing.assert_allclose(chi.values, direct.values, rtol=1e-4, atol=1e-10)
    again = susceptibilities(
        SusceptibilityParameters(
            store=store, workload=WORKLOAD, checkpoints=ckpts, sampler=SAMPLER, n_workers=2
        )
    )
    assert again["computed"] == 0 and again["already_complete"] == 6
    # Persisted task results are JSON, never pickle (they are read back from disk).
    import json

    from tasks.caching import result_storage

    results = [p for p in result_storage().rglob("*") if p.is_file()]
    assert results
    for path in results:
        json.loads(path.read_text())


def _complete_shards(store: str) -> int:
    from patterning_core.store.chi_store import completed

    try:
        state = completed(store, 0)
    except Exception:  # the store is not created yet
        return 0
    return int(state["restricted"].sum() + state["full"].sum())


def test_killed_run_resumes_computing_only_missing_shards(tmp_path, prefect_server):
    """SIGKILL the flow process and its Dask workers mid-run; the rerun recomputes only
    the shards not marked complete, and χ equals an uninterrupted run's."""
    import os
    import signal
    import time

    sampler = SamplerConfig.from_dict(SAMPLER).replace(num_chains=4, num_draws=600).to_dict()
    total = 3 * 4  # (2 component groups + full run) × 4 chains
    ckpts = [{"step": 0, "path": None}]
    store = str(tmp_path / "killed.zarr")
    proc = spawn_flow(store, sampler, start_new_session=True)
    deadline = time.time() + 240
    while _complete_shards(store) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # let the killed workers' last writes (if any) settle
    done_before = _complete_shards(store)
    assert 2 <= done_before < total, "the kill must land mid-run for this test to mean much"

    resumed = susceptibilities(
        SusceptibilityParameters(
            store=store, workload=WORKLOAD, checkpoints=ckpts, sampler=sampler, n_workers=2
        )
    )
    assert resumed["computed"] == total - done_before
    assert resumed["already_complete"] == done_before

    reference = str(tmp_path / "uninterrupted.zarr")
    whole = susceptibilities(
        SusceptibilityParameters(
            store=reference, workload=WORKLOAD, checkpoints=ckpts, sampler=sampler, n_workers=2
        )
    )
    assert whole["computed"] == total
    np.testing.assert_array_equal(open_chi(store)["chi"].values, open_chi(reference)["chi"].values)


def test_pipeline_end_to_end_on_tiny_sizes(tmp_path, prefect_server):
    """train → χ at two checkpoints → decomposition → report, then a cached rerun."""
    from flows.pipeline import pipeline

    args = dict(
        preset="tiny",
        data={"source": "synthetic", "preset": "tiny", "n_seqs": 256},
        train={"steps": 40, "batch_size": 16, "checkpoint_steps": [0, 20, 40]},
        sampler=SamplerConfig(
            step_size=1e-3,
            n_beta=30.0,
            localization=300.0,
            num_chains=2,
            num_draws=10,
            batch_size=8,
        ).to_dict(),
        chi_checkpoints=[20, 40],
        sgld_seqs=64,
        probe_seqs=2,
        out_dir=str(tmp_path / "out"),
    )
    summary = pipeline(PipelineParameters(**args))
    # tiny: 2 layers × 2 heads → groups layer-0 heads, layer-1 heads, embed, unembed, full.
    assert summary["computed_shards"] == 2 * 5 * 2
    chi = open_chi(summary["store"])["chi"]
    assert chi.sizes == {"checkpoint": 2, "component": 6, "unit": 2 * 31}
    assert np.isfinite(chi.values).all()
    assert set(chi.coords) >= {"token_text", "pattern_class", "position", "sequence"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Checkpoint 40" in report and "PC1" in report
    for row in summary["checkpoints"]:
        assert row["explained_variance"] == sorted(row["explained_variance"], reverse=True)
    again = pipeline(PipelineParameters(**args))
    assert again["computed_shards"] == 0 and again["already_complete"] == 20


def test_flow_runs_on_an_existing_dask_cluster(tmp_path, prefect_server):
    """A real `dask scheduler` and two `dask worker` processes on loopback."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from distributed import Client

    from flows.runtime import cluster_has_gpus
    from flows.server import _free_port

    bin_dir = Path(sys.executable).parent
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        # One worker advertises a GPU: shards then ask Dask for one (and pick their
        # device on the worker, the CPU here), which exercises the GPU scheduling path.
        for extra in (["--resources", "GPU=1"], []):
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "dask"),
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        *extra,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        deadline = time.time() + 60
        with Client(address, timeout=30) as client:
            while len(client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
                time.sleep(0.5)
            assert len(client.scheduler_info()["workers"]) == 2
        assert cluster_has_gpus(address)
        store = str(tmp_path / "remote.zarr")
        summary = susceptibilities(
            SusceptibilityParameters(
                store=store,
                workload=WORKLOAD,
                checkpoints=[{"step": 0, "path": None}],
                sampler=SAMPLER,
                dask_address=address,
            )
        )
        assert summary["computed"] == 6
        assert np.isfinite(open_chi(store)["chi"].values).all()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_two_concurrent_runs_compute_each_shard_once(tmp_path, prefect_server):
    """Two runs on the same store at once: every shard computed exactly once in total,
    both finish, and the store holds one complete, verified χ."""
    import json
    import subprocess

    from patterning_core.store.chi_store import completed

    sampler = SamplerConfig.from_dict(SAMPLER).replace(num_draws=300).to_dict()
    store = str(tmp_path / "shared.zarr")
    pipes = {"text": True, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [spawn_flow(store, sampler, n_workers=1, **pipes) for _ in range(2)]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"a run failed; its stderr ends:\n{err[-4000:]}"
        line = next(x for x in out.splitlines() if x.startswith("SUMMARY"))
        summaries.append(json.loads(line.removeprefix("SUMMARY")))
    assert sum(s["computed"] for s in summaries) == 6
    state = completed(store, 0, verify=True)
    assert state["restricted"].all() and state["full"].all()
    assert np.isfinite(open_chi(store)["chi"].values).all()


def test_killed_dask_worker_loses_nothing(tmp_path, prefect_server):
    """SIGKILL a Dask worker process mid-shard: the run (Dask reschedules the shard) or a
    rerun completes, and χ equals an uninterrupted run's."""
    import os
    import signal
    import time

    import psutil

    sampler = SamplerConfig.from_dict(SAMPLER).replace(num_chains=4, num_draws=600).to_dict()
    ckpts = [{"step": 0, "path": None}]
    store = str(tmp_path / "worker-killed.zarr")
    proc = spawn_flow(store, sampler)
    deadline = time.time() + 240
    while _complete_shards(store) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "spawn_main" in " ".join(p.cmdline())
    ]
    assert workers, "no Dask worker process found to kill"
    os.kill(workers[0].pid, signal.SIGKILL)
    proc.wait(timeout=600)
    resumed = susceptibilities(
        SusceptibilityParameters(
            store=store, workload=WORKLOAD, checkpoints=ckpts, sampler=sampler, n_workers=2
        )
    )
    assert resumed["computed"] + resumed["already_complete"] == 12
    reference = str(tmp_path / "reference.zarr")
    susceptibilities(
        SusceptibilityParameters(
            store=reference, workload=WORKLOAD, checkpoints=ckpts, sampler=sampler, n_workers=2
        )
    )
    np.testing.assert_array_equal(open_chi(store)["chi"].values, open_chi(reference)["chi"].values)
