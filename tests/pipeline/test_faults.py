"""Faults while writing: a full disk mid-shard, and readers while a shard or χ is written.

The faults are injected at zarr's chunk writer (``zarr.storage._local._put``, which writes
a temporary file and renames it), so the store code runs exactly as in production.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr.storage._local as zarr_local

from patterning_core.estimators.susceptibility import sample_susceptibility_stats
from patterning_core.model.checkpoints import checkpoint_path, list_checkpoints, save_checkpoint
from patterning_core.model.transformer import TransformerConfig, init_params
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import (
    StoreError,
    assemble_chi,
    completed,
    create_store,
    open_chi,
    store_summary,
    write_shard,
)
from patterning_core.toys.models import make_mlp_regression

CONFIG = SamplerConfig(
    step_size=1e-4,
    n_beta=20.0,
    localization=100.0,
    num_chains=2,
    num_draws=8,
    num_burnin=2,
    batch_size=16,
    seed=3,
)
COMPONENTS = ["hidden", "bias", "readout"]
FULL_RUN_STATS = ["full_count", "full_loss_mean", "full_probe_mean", "full_loss_trace"]
REAL_PUT = zarr_local._put


@pytest.fixture(scope="module")
def stats() -> xr.Dataset:
    """Statistics of every shard (3 components and the full run × 2 chains) of a tiny MLP."""
    loss_fn, params, data = make_mlp_regression(n=64, d_in=3, hidden=4, train_steps=50)
    comps = {
        "hidden": {"w1": torch.ones_like(params["w1"], dtype=bool)},
        "bias": {"b1": torch.ones_like(params["b1"], dtype=bool)},
        "readout": {"w2": torch.ones_like(params["w2"], dtype=bool)},
    }
    probes = tuple(t[:4] for t in data)
    return sample_susceptibility_stats(loss_fn, params, data, probes, comps, CONFIG)


def new_store(path: Path) -> None:
    create_store(
        path,
        checkpoints=[0, 50],
        components=COMPONENTS,
        num_chains=2,
        num_draws=CONFIG.num_draws,
        unit_coords={"position": np.arange(4)},
        attrs={"sampler_config": CONFIG.to_json(), "n_beta": CONFIG.n_beta},
    )


def chain_shard(stats: xr.Dataset, chain: int) -> xr.Dataset:
    """Every component and the full run of one chain: one write_shard call."""
    return stats.sel(chain=[chain])


def in_thread(fn: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except BaseException as err:  # reported to the test, not lost in the thread
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- disk full


def test_disk_full_mid_shard_is_a_clear_error_and_the_rerun_completes(tmp_path, monkeypatch, stats):
    path = tmp_path / "chi.zarr"
    new_store(path)
    write_shard(path, 50, chain_shard(stats, 0))  # a shard completed before the disk fills

    written: list[Path] = []
    in_flight = threading.Semaphore(64)  # zarr writes chunks from several threads at once

    def disk_fills_up(p: Path, value, exclusive: bool = False) -> int:
        """Let three chunks through, then fail half-way through writing the next one."""
        if len(written) >= 3:
            data = value.to_bytes()
            p.parent.mkdir(parents=True, exist_ok=True)
            with zarr_local._atomic_write(p, "wb") as f:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        written.append(p)
        with in_flight:
            return REAL_PUT(p, value, exclusive)

    def writes_settled(timeout: float = 10.0) -> None:
        """Wait for chunk writes that started before the failure and still run on zarr's
        threads (they finish on their own; a partial file they hold is not a leftover)."""
        for _ in range(64):
            assert in_flight.acquire(timeout=timeout)

    monkeypatch.setattr(zarr_local, "_put", disk_fills_up)
    with pytest.raises(StoreError) as info:
        write_shard(path, 50, chain_shard(stats, 1))
    message = str(info.value)
    assert "disk full" in message and "checkpoint 50" in message and "chains [1]" in message
    assert "Free disk space" in message and "run the same command again" in message
    assert "completed shards are kept" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert len(written) == 3  # the failure came part-way through the shard

    # The store stays readable and shows exactly which shards are complete.
    writes_settled()
    assert not list(path.rglob("*.partial"))  # no half-written chunk file left behind
    for _ in range(64):
        in_flight.release()
    state = completed(path, 50, verify=True)
    assert state["restricted"][:, 0].all() and state["full"][0]
    assert not state["restricted"][:, 1].any() and not state["full"][1]
    assert "checkpoint 50: 4/8 shards complete; χ not assembled" in store_summary(path)
    ds = open_chi(path)
    assert not ds["chi_complete"].sel(checkpoint=50) and np.isnan(ds["chi"].values).all()
    with pytest.raises(StoreError, match=r"checkpoint 50: shards .*\('hidden', 1\)"):
        assemble_chi(path, 50)

    # Space is freed: the same shard is written again and χ is the uninterrupted one.
    monkeypatch.setattr(zarr_local, "_put", REAL_PUT)
    write_shard(path, 50, chain_shard(stats, 1))
    assert completed(path, 50, verify=True)["restricted"].all()
    reference = tmp_path / "uninterrupted.zarr"
    new_store(reference)
    write_shard(reference, 50, stats)
    np.testing.assert_array_equal(assemble_chi(path, 50).values, assemble_chi(reference, 50).values)
    np.testing.assert_array_equal(open_chi(path)["chi"].values, open_chi(reference)["chi"].values)


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_ones(tmp_path, monkeypatch):
    cfg = TransformerConfig(n_layers=1, n_heads=2, d_model=8, d_head=4, n_ctx=6, d_vocab=11)
    params = init_params(cfg, seed=0)
    save_checkpoint(checkpoint_path(tmp_path, 0), params, cfg, step=0, data_position=0)

    def disk_full(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(
        OSError, match=r"disk full while writing checkpoint .*free disk space"
    ) as info:
        save_checkpoint(checkpoint_path(tmp_path, 10), params, cfg, step=10, data_position=320)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000000.safetensors"]


# ----------------------------------------------------------------------------- readers


def test_readers_during_a_shard_write_see_the_previous_state_or_incomplete(
    tmp_path, monkeypatch, stats
):
    """A writer is held after writing a shard's data, before its completion record; a
    reader meanwhile sees the complete checkpoint unchanged and the other one incomplete."""
    path = tmp_path / "chi.zarr"
    new_store(path)
    write_shard(path, 0, stats)
    before = assemble_chi(path, 0).values

    # One shard (one record chunk): holding a zarr writer thread leaves the others free.
    reached, release = threading.Event(), threading.Event()

    def hold_record(p: Path, value, exclusive: bool = False) -> int:
        if "shard_done" in p.parts:
            reached.set()
            release.wait(60)
        return REAL_PUT(p, value, exclusive)

    monkeypatch.setattr(zarr_local, "_put", hold_record)
    errors: list[BaseException] = []
    shard = stats.sel(component=["hidden"], chain=[0]).drop_vars(FULL_RUN_STATS)
    writer = in_thread(lambda: write_shard(path, 50, shard), errors)
    try:
        assert reached.wait(60), "the writer never reached its completion record"
        assert list((path / "probe_mean").rglob("c/1/0/0/*")), "shard data should be written"
        ds = open_chi(path)
        assert ds["chi_complete"].values.tolist() == [True, False]
        np.testing.assert_array_equal(ds["chi"].sel(checkpoint=0).values, before)
        assert np.isnan(ds["chi"].sel(checkpoint=50).values).all()
        assert not completed(path, 50)["restricted"].any()
        assert "checkpoint 50: 0/8 shards complete; χ not assembled" in store_summary(path)
        assert "checkpoint 0: 8/8 shards complete; χ mean" in store_summary(path)
        with pytest.raises(StoreError, match=r"checkpoint 50: shards .*\('hidden', 0\).*run the"):
            assemble_chi(path, 50)
    finally:
        release.set()
        writer.join(60)
    assert not errors and not writer.is_alive()
    assert completed(path, 50, verify=True)["restricted"][0, 0]  # the shard is now complete
    assert "checkpoint 50: 1/8 shards complete; χ not assembled" in store_summary(path)


def test_a_chi_being_rewritten_reads_as_incomplete_never_half_written(tmp_path, monkeypatch, stats):
    path = tmp_path / "chi.zarr"
    new_store(path)
    write_shard(path, 0, stats)
    old = assemble_chi(path, 0).values

    def no_writes(p: Path, value, exclusive: bool = False) -> int:
        raise AssertionError(f"re-assembling an unchanged χ must not write ({p})")

    monkeypatch.setattr(zarr_local, "_put", no_writes)
    np.testing.assert_array_equal(assemble_chi(path, 0).values, old)  # nothing rewritten

    # The shards are recomputed with other values (e.g. after a lost chunk, on another
    # device); a reader while the new χ is being written sees it marked incomplete.
    monkeypatch.setattr(zarr_local, "_put", REAL_PUT)
    changed = stats.copy(deep=True)
    changed["probe_mean"] = changed["probe_mean"] + 0.25
    write_shard(path, 0, changed)
    reached, release = threading.Event(), threading.Event()

    def hold_chi_chunk(p: Path, value, exclusive: bool = False) -> int:
        if "chi" in p.parts and not reached.is_set():
            reached.set()
            release.wait(60)
        return REAL_PUT(p, value, exclusive)

    monkeypatch.setattr(zarr_local, "_put", hold_chi_chunk)
    errors: list[BaseException] = []
    writer = in_thread(lambda: assemble_chi(path, 0), errors)
    try:
        assert reached.wait(60), "assemble_chi never wrote χ"
        ds = open_chi(path)
        assert not ds["chi_complete"].sel(checkpoint=0)
        assert np.isnan(ds["chi"].sel(checkpoint=0).values).all()
        assert "checkpoint 0: 8/8 shards complete; χ not assembled" in store_summary(path)
    finally:
        release.set()
        writer.join(60)
    assert not errors and not writer.is_alive()
    ds = open_chi(path)
    assert bool(ds["chi_complete"].sel(checkpoint=0))
    new = ds["chi"].sel(checkpoint=0).values
    assert np.isfinite(new).all() and not np.array_equal(new, old)
