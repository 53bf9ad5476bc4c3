"""The χ store: layout, shard writes, completion records, checksums, assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterning_core.estimators.susceptibility import chi_from_stats, sample_susceptibility_stats
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import (
    StoreError,
    assemble_chi,
    completed,
    create_store,
    open_chi,
    read_stats,
    store_summary,
    write_shard,
)
from patterning_core.toys.models import make_mlp_regression

CONFIG = SamplerConfig(
    step_size=1e-4,
    n_beta=20.0,
    localization=100.0,
    num_chains=2,
    num_draws=10,
    num_burnin=2,
    batch_size=16,
    seed=1,
)


@pytest.fixture(scope="module")
def model():
    loss_fn, params, data = make_mlp_regression(n=64, d_in=3, hidden=4, train_steps=50)
    comps = {
        "hidden": {"w1": torch.ones_like(params["w1"], dtype=bool)},
        "bias": {"b1": torch.ones_like(params["b1"], dtype=bool)},
        "readout": {"w2": torch.ones_like(params["w2"], dtype=bool)},
    }
    probes = tuple(t[:4] for t in data)
    return loss_fn, params, data, probes, comps


def new_store(path, comps):
    return create_store(
        path,
        checkpoints=[0, 50],
        components=list(comps),
        num_chains=2,
        num_draws=CONFIG.num_draws,
        unit_coords={"token_text": np.array(["a", " b", "\n", "(("]), "position": np.arange(4)},
        attrs={"sampler_config": CONFIG.to_json(), "n_beta": CONFIG.n_beta},
    )


def test_shards_assemble_to_the_direct_estimate(tmp_path, model):
    loss_fn, params, data, probes, comps = model
    path = tmp_path / "chi.zarr"
    assert new_store(path, comps) is True
    assert new_store(path, comps) is False  # resumable: same layout reopens
    shards = [
        dict(component_names=["hidden", "readout"], chain_ids=[0], include_full=True),
        dict(component_names=["bias"], chain_ids=[0], include_full=False),
        dict(component_names=["hidden", "bias", "readout"], chain_ids=[1], include_full=True),
    ]
    for i, shard in enumerate(shards):
        stats = sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG, **shard)
        write_shard(path, 50, stats)
        state = completed(path, 50)
        if i < 2:
            assert not state["restricted"].all()
    assert completed(path, 50, verify=True)["restricted"].all()
    direct = chi_from_stats(
        sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG)
    )
    chi = assemble_chi(path, 50)
    # Shards vmap fewer lanes than the direct run: float32 rounding differs (~1e-7 per
    # step), and χ, a difference of means, amplifies it a little. Same draws otherwise.
    np.testing.assert_allclose(chi.values, direct.values, rtol=1e-4, atol=1e-10)
    ds = open_chi(path)
    assert ds["chi"].dims == ("checkpoint", "component", "unit")
    np.testing.assert_array_equal(ds["chi"].sel(checkpoint=50).values, chi.values)
    assert np.isnan(ds["chi"].sel(checkpoint=0).values).all()
    assert list(ds["token_text"].values) == ["a", " b", "\n", "(("]
    summary = store_summary(path)
    assert "checkpoint 50: 8/8 shards complete" in summary
    assert "checkpoint 0: 0/8 shards complete; χ not assembled" in summary


def test_incomplete_or_corrupted_shards_are_never_read(tmp_path, model):
    loss_fn, params, data, probes, comps = model
    path = tmp_path / "chi.zarr"
    new_store(path, comps)
    stats = sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG)
    write_shard(path, 0, stats)
    read_stats(path, 0)  # complete: reads
    with pytest.raises(StoreError, match="missing or fail their checksum"):
        read_stats(path, 50)
    # Lose one chunk of data under a completion record.
    chunk = next((path / "probe_mean").rglob("c/0/1/1/*"))
    chunk.unlink()
    assert not completed(path, 0, verify=True)["restricted"][1, 1]
    assert completed(path, 0)["restricted"][1, 1]  # the bare record alone would lie
    with pytest.raises(StoreError, match=r"\('bias', 1\)"):
        read_stats(path, 0)


def test_incompatible_store_is_a_clear_error(tmp_path, model):
    *_, comps = model
    path = tmp_path / "chi.zarr"
    new_store(path, comps)
    with pytest.raises(StoreError, match="different run"):
        create_store(
            path,
            checkpoints=[0, 50],
            components=["hidden"],
            num_chains=2,
            num_draws=CONFIG.num_draws,
            unit_coords={"position": np.arange(4)},
            attrs={},
        )
    with pytest.raises(StoreError, match="no χ store"):
        open_chi(tmp_path / "nowhere.zarr")


def test_store_at_an_fsspec_url(model):
    loss_fn, params, data, probes, comps = model
    url = "memory://patterning-tests/chi.zarr"
    new_store(url, comps)
    write_shard(url, 0, sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG))
    chi = assemble_chi(url, 0)
    np.testing.assert_array_equal(open_chi(url)["chi"].sel(checkpoint=0).values, chi.values)
    assert "checkpoint 0: 8/8 shards complete" in store_summary(url)


def test_concurrent_creators_share_one_store(tmp_path, model):
    """Several processes creating the same store at once: one creates, the rest reopen it."""
    import concurrent.futures
    import multiprocessing

    *_, comps = model
    path = tmp_path / "raced.zarr"
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        created = list(pool.map(_create_for_race, [str(path)] * 4, [list(comps)] * 4))
    assert sorted(created) == [False, False, False, True]
    assert open_chi(path).sizes["component"] == 3
    assert not list(tmp_path.glob(".raced.zarr.creating-*"))  # staging folders cleaned up


def _create_for_race(path: str, comps: list[str]) -> bool:
    return new_store(path, dict.fromkeys(comps))


def test_changed_checkpoint_is_refused(tmp_path, model):
    *_, comps = model
    path = tmp_path / "chi.zarr"
    digests = {
        "sampler_config": CONFIG.to_json(),
        "checkpoint_digests": '{"0": "aaa", "50": "bbb"}',
    }
    kwargs = dict(
        checkpoints=[0, 50],
        components=list(comps),
        num_chains=2,
        num_draws=CONFIG.num_draws,
        unit_coords={"position": np.arange(4)},
    )
    assert create_store(path, attrs=digests, **kwargs)
    assert not create_store(path, attrs=digests, **kwargs)
    changed = {**digests, "checkpoint_digests": '{"0": "aaa", "50": "ccc"}'}
    with pytest.raises(StoreError, match=r"steps \[50\] changed"):
        create_store(path, attrs=changed, **kwargs)


def test_store_bookkeeping_computes_no_dask_graph(tmp_path, model):
    """Shards write and check the store inside Dask workers. A dask compute there goes
    through the cluster and lets the worker start a second shard beside the running one, so
    the store's own reads and writes must not build dask graphs at all."""
    import dask

    def refuse(*args, **kwargs):
        raise AssertionError("the store computed a dask graph")

    loss_fn, params, data, probes, comps = model
    path = tmp_path / "chi.zarr"
    stats = sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG)
    with dask.config.set(scheduler=refuse):
        new_store(path, comps)
        write_shard(path, 0, stats)
        assert completed(path, 0, verify=True)["restricted"].all()
        read_stats(path, 0)
        assemble_chi(path, 0)
        assert "checkpoint 0" in store_summary(path)
        with pytest.raises(AssertionError, match="dask graph"):  # the check itself can fail
            open_chi(path)["chi"].load()
