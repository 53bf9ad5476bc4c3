"""The susceptibilities flow end to end: local Dask cluster, store, resume, memoization."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.susceptibilities import susceptibilities
from patterning_core.sampling import SamplerConfig
from patterning_core.store import open_chi
from patterning_core.susceptibility import estimate_susceptibilities
from patterning_core.workloads import build_workload

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


def test_flow_matches_direct_estimate_and_rerun_does_no_sampling(tmp_path, prefect_server):
    store = str(tmp_path / "chi.zarr")
    ckpts = [{"step": 0, "path": None}]
    first = susceptibilities(store, WORKLOAD, ckpts, SAMPLER, n_workers=2)
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
    again = susceptibilities(store, WORKLOAD, ckpts, SAMPLER, n_workers=2)
    assert again["computed"] == 0 and again["already_complete"] == 6
