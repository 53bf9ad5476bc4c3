"""The fin readings per disjoint chain set (``experiments/spacing/fin_chains.py``): χ of a
chain subset against the estimator's own per-chain χ, split-half reliability on constructed
halves, and the rows' layout on a constructed store."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from patterning_core.estimators.susceptibility import chi_from_stats
from patterning_core.experiments.spacing import fin_chains
from tests.chi_stores import COMPONENTS, CONFIG, shard_stats

UNITS = 400


def four_chains(seed: int) -> xr.Dataset:
    """Statistics of 4 chains with the attributes a store's ``read_stats`` gives."""
    stats = shard_stats(COMPONENTS, [0, 1, 2, 3], UNITS, seed=seed)
    stats.attrs |= {"n_beta": CONFIG.n_beta, "sampler_config": CONFIG.to_json(), "convention": ""}
    return stats


@pytest.fixture
def stats() -> xr.Dataset:
    return four_chains(3)


def test_chain_sets_partition_the_chains_and_refuse_a_size_that_does_not_divide():
    assert fin_chains.chain_sets(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert fin_chains.chain_sets(4, 1) == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="divides 6"):
        fin_chains.chain_sets(6, 4)


def test_chi_of_all_chains_is_the_pooled_chi(stats):
    chi, loss = fin_chains.chi_of_chains(stats, range(4))
    expected = chi_from_stats(stats).transpose("component", "unit")
    np.testing.assert_allclose(chi.values, expected.values, rtol=1e-12, atol=0)
    # equal counts: the pooled mean is the plain mean over chains
    np.testing.assert_allclose(loss, stats["full_probe_mean"].values.mean(axis=0), rtol=1e-12)


def test_chi_of_one_chain_is_that_chains_own_estimate(stats):
    per_chain = chi_from_stats(stats, per_chain=True)
    for c in range(4):
        chi, loss = fin_chains.chi_of_chains(stats, [c])
        np.testing.assert_allclose(
            chi.values, per_chain.isel(chain=c).transpose("component", "unit").values, rtol=1e-12
        )
        np.testing.assert_allclose(loss, stats["full_probe_mean"].values[c], rtol=1e-12)


def test_split_half_is_one_for_identical_halves_and_near_zero_for_independent_ones(stats):
    twin = stats.isel(chain=[0, 1, 0, 1]).assign_coords(chain=[0, 1, 2, 3])
    same = fin_chains.split_half(twin)
    assert same["median"] == pytest.approx(1.0, abs=1e-12)
    assert same["spearman_brown"] == pytest.approx(1.0, abs=1e-12)
    assert same["residual_median"] == pytest.approx(1.0, abs=1e-12)
    independent = fin_chains.split_half(stats)
    # random statistics: per-component r ~ N(0, 1/UNITS); 4.5 sd bounds every one of 18
    assert all(abs(r) < 4.5 / np.sqrt(UNITS) for r in independent["per_component"].values())
    residual = independent["residual_per_component"].values()
    assert all(abs(r) < 4.5 / np.sqrt(UNITS) for r in residual)
    with pytest.raises(ValueError, match="even number"):
        fin_chains.split_half(stats.isel(chain=[0, 1, 2]))


def test_rows_per_set_with_beyond_init_only_where_a_disjoint_set_exists(monkeypatch, stats):
    rng = np.random.default_rng(0)
    positions = np.full(UNITS, np.nan)
    positions[: UNITS // 2] = rng.integers(1, 9, UNITS // 2)
    stores = {"trained": stats, "init": four_chains(4)}

    def fake_inputs(store, step, config):
        return None, positions, None, xr.Dataset(attrs={"workload": "w"})

    monkeypatch.setattr(fin_chains, "fin_inputs", fake_inputs)
    monkeypatch.setattr(fin_chains, "read_stats", lambda store, step: stores[store])
    monkeypatch.setattr(fin_chains, "check_same_workload", lambda store, init: None)
    rows = fin_chains.fin_by_chain_count("trained", 3000, None, [1, 2, 4], init=("init", 0))
    assert [(r["size"], r["set"]) for r in rows] == [
        (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (4, 0)
    ]  # fmt: skip
    assert rows[4]["chains"] == [0, 1] and rows[5]["chains"] == [2, 3]
    for r in rows[:-1]:
        assert {"beyond_init", "init_metric", "init_beyond_init"} <= set(r)
    assert "beyond_init" not in rows[-1] and "init_metric" not in rows[-1]
    assert all(0 <= r["agreement"] <= 1 for r in rows[:-1]) and "agreement" not in rows[-1]
    # random statistics hold no fin: every metric stays near the null of 8 modes
    null = np.sqrt(2 * np.log(16) / (UNITS // 2))
    assert all(r["metric"] < 2 * null for r in rows)
    summary = fin_chains.summarize(rows)
    assert [(s["size"], s["sets"]) for s in summary] == [(1, 4), (2, 2), (4, 1)]
    metrics = [r["metric"] for r in rows if r["size"] == 2]
    assert summary[1]["metric"] == pytest.approx((np.mean(metrics), np.std(metrics, ddof=1)))
    assert summary[2]["metric"] == (rows[-1]["metric"], 0.0)


def test_agreement_is_one_for_identical_sets_and_small_for_independent_ones(monkeypatch):
    twin = four_chains(5).isel(chain=[0, 1, 0, 1]).assign_coords(chain=[0, 1, 2, 3])
    positions = np.full(UNITS, np.nan)
    positions[: UNITS // 2] = np.arange(UNITS // 2) % 8 + 1
    monkeypatch.setattr(
        fin_chains,
        "fin_inputs",
        lambda store, step, config: (None, positions, None, xr.Dataset(attrs={"workload": "w"})),
    )
    stores = {"twin": twin, "independent": four_chains(6)}
    monkeypatch.setattr(fin_chains, "read_stats", lambda store, step: stores[store])
    same = fin_chains.fin_by_chain_count("twin", 3000, None, [2])
    assert [r["agreement"] for r in same] == pytest.approx([1.0, 1.0], abs=1e-9)
    other = fin_chains.fin_by_chain_count("independent", 3000, None, [2])
    # unrelated unit vectors over UNITS units: |cos| ~ 1/√UNITS; 4.5 sd bounds it
    assert all(r["agreement"] < 4.5 / np.sqrt(UNITS) for r in other)


def test_an_initialization_with_fewer_chains_is_refused(monkeypatch, stats):
    stores = {"trained": stats, "init": stats.isel(chain=[0, 1])}
    monkeypatch.setattr(
        fin_chains,
        "fin_inputs",
        lambda store, step, config: (None, None, None, xr.Dataset(attrs={"workload": "w"})),
    )
    monkeypatch.setattr(fin_chains, "read_stats", lambda store, step: stores[store])
    monkeypatch.setattr(fin_chains, "check_same_workload", lambda store, init: None)
    with pytest.raises(ValueError, match="as many"):
        fin_chains.fin_by_chain_count("trained", 3000, None, [2], init=("init", 0))


def test_found_again_compares_the_fin_modes_of_the_two_halves():
    from patterning_core.experiments.spacing.fin_store import found_again

    positions = np.full(UNITS, np.nan)
    positions[: UNITS // 2] = np.arange(UNITS // 2) % 8 + 1
    twin = four_chains(7).isel(chain=[0, 1, 0, 1]).assign_coords(chain=[0, 1, 2, 3])
    same = found_again(twin, positions)
    assert same["agreement"] == pytest.approx(1.0, abs=1e-9)
    assert same["metrics"][0] == same["metrics"][1] and same["chains_per_half"] == 2
    other = found_again(four_chains(8), positions)
    assert other["agreement"] < 4.5 / np.sqrt(UNITS)
    assert found_again(four_chains(8).isel(chain=[0, 1, 2]), positions) is None


def test_an_initialization_on_another_workload_is_refused(tmp_path):
    from patterning_core.experiments.spacing.fin_store import check_same_workload
    from tests.chi_stores import new_store

    new_store(tmp_path / "a.zarr", attrs={"workload": '{"probe_seqs": 8}'})
    new_store(tmp_path / "b.zarr", attrs={"workload": '{"probe_seqs": 4}'})
    new_store(tmp_path / "c.zarr", attrs={"workload": '{"probe_seqs": 8}'})
    check_same_workload(tmp_path / "a.zarr", (tmp_path / "c.zarr", 1000))
    with pytest.raises(ValueError, match="another workload"):
        check_same_workload(tmp_path / "a.zarr", (tmp_path / "b.zarr", 1000))


def test_a_subset_is_read_as_the_store_of_that_subset_alone(monkeypatch, stats):
    """Restricting units and components must come before the modes: the rows equal those of
    a store that holds only the kept units and components."""
    rng = np.random.default_rng(9)
    positions = np.full(UNITS, np.nan)
    positions[::2] = rng.integers(1, 9, UNITS // 2)
    keep = np.zeros(UNITS, dtype=bool)
    keep[UNITS // 4 :] = True
    heads = [c for c in COMPONENTS if c.startswith("L1H")]
    init = four_chains(10)
    small = {
        "trained": stats.isel(unit=np.flatnonzero(keep)).sel(component=heads),
        "init": init.isel(unit=np.flatnonzero(keep)).sel(component=heads),
    }
    full = {"trained": stats, "init": init}
    chi = xr.DataArray(np.zeros((len(COMPONENTS), UNITS)), dims=("component", "unit"))
    chi = chi.assign_coords(component=COMPONENTS)
    monkeypatch.setattr(fin_chains, "check_same_workload", lambda store, init: None)

    def rows(stores, pos, **subset):
        monkeypatch.setattr(
            fin_chains,
            "fin_inputs",
            lambda store, step, config: (chi, pos, None, xr.Dataset(attrs={"workload": "w"})),
        )
        monkeypatch.setattr(fin_chains, "read_stats", lambda store, step: stores[store])
        return fin_chains.fin_by_chain_count("trained", 3000, None, [2], init=("init", 0), **subset)

    restricted = rows(full, positions, units=keep, components=heads)
    alone = rows(small, positions[keep])
    assert [r["mode"] for r in restricted] == [r["mode"] for r in alone]
    for key in ("metric", "partial_metric", "agreement", "beyond_init", "init_metric"):
        assert [r[key] for r in restricted] == pytest.approx([r[key] for r in alone], abs=1e-12)
    whole = rows(full, positions)
    assert [r["metric"] for r in whole] != pytest.approx([r["metric"] for r in restricted])
    half = fin_chains.split_half(stats, units=keep, components=heads)
    assert half["per_component"].keys() == set(heads)
    assert half["median"] == pytest.approx(fin_chains.split_half(small["trained"])["median"])
    with pytest.raises(ValueError, match="mask over 400 units"):
        rows(full, positions, units=keep[:-1])
    with pytest.raises(ValueError, match="not in trained"):
        rows(full, positions, components=["L9H9"])


def test_sequence_units_selects_the_units_of_the_named_sequences():
    chi = xr.DataArray(np.zeros((2, 6)), dims=("component", "unit"))
    chi = chi.assign_coords(sequence=("unit", [0, 0, 1, 1, 2, 2]))
    assert fin_chains.sequence_units(chi, [2, 0]).tolist() == [1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="no `sequence`"):
        fin_chains.sequence_units(chi.drop_vars("sequence"), [0])


def test_the_restricted_estimator_of_a_chain_set_is_that_sets_restricted_chi(stats):
    from patterning_core.estimators.susceptibility import restricted_chi_from_stats

    chi, _ = fin_chains.chi_of_chains(stats, [1, 3], "restricted")
    expected = restricted_chi_from_stats(stats.isel(chain=[1, 3])).transpose("component", "unit")
    np.testing.assert_allclose(chi.values, expected.values, rtol=1e-12, atol=0)
    two_run, _ = fin_chains.chi_of_chains(stats, [1, 3])
    assert not np.allclose(chi.values, two_run.values)
    with pytest.raises(ValueError, match="use one of"):
        fin_chains.chi_of_chains(stats, [1, 3], "one_run")
