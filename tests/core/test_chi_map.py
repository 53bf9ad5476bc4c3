"""The map of a χ store (``patterning chi map``): readouts on a tiny store, written back and
read with ``open_chi_map``; mode matching and coordinate correlations on constructed
examples whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from flows.cli import main
from patterning_core.estimators.chi_map import (
    ChiMapSettings,
    checkpoint_readout,
    coordinate_correlation,
    layer_groups,
    match_modes,
)
from patterning_core.store.chi_map import (
    PARTS_GROUP,
    compute_checkpoint_map,
    open_chi_map,
    read_checkpoint_chi,
    write_chi_map,
)
from patterning_core.store.chi_store import StoreError, create_store, open_chi, write_chi

COMPONENTS = [f"L{layer}H{head}" for layer in range(2) for head in range(3)] + ["embed", "unembed"]
STEPS = [0, 50, 100]
UNITS = 40


def structured_chi(seed: int, rng_scale: np.ndarray) -> np.ndarray:
    """χ [component, unit]: three latent patterns over units loaded on the components, plus
    noise, each row scaled by its own factor (as the δ-localization does)."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(len(COMPONENTS), 3)) * [3.0, 2.0, 1.0]
    patterns = rng.normal(size=(3, UNITS))
    return rng_scale[:, None] * (
        loadings @ patterns + 0.1 * rng.normal(size=(len(COMPONENTS), UNITS))
    )


def unit_coords() -> dict[str, np.ndarray]:
    units = np.arange(UNITS)
    return {
        "sequence": units // 10,
        "position": units % 10,
        "token_text": np.array([" ", "a", "b", "(", ")"])[units % 5],
        "pattern_class": np.array(["space", "word", "word", "open", "close"])[units % 5],
    }


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "chi.zarr"
    create_store(
        path,
        checkpoints=STEPS,
        components=COMPONENTS,
        num_chains=1,
        num_draws=2,
        unit_coords=unit_coords(),
        attrs={"store_id": "test-store"},
    )
    scale = np.geomspace(1e-3, 1e2, len(COMPONENTS))
    for i, step in enumerate(STEPS):
        write_chi(path, step, structured_chi(i, scale))
    return path


def chi_of(store, step: int) -> xr.DataArray:
    chi, record = read_checkpoint_chi(store, step)
    assert record != 0
    np.testing.assert_array_equal(chi.values, open_chi(store)["chi"].sel(checkpoint=step).values)
    return chi


def test_layers_group_heads_and_keep_other_components_apart():
    groups = layer_groups(COMPONENTS)
    assert groups == {"L0": [0, 1, 2], "L1": [3, 4, 5], "embed": [6], "unembed": [7]}


def test_readout_shapes_spectra_and_standardization(store):
    chi = chi_of(store, 50)
    settings = ChiMapSettings(n_modes=4, umap=False)
    readout = checkpoint_readout(chi, settings)
    assert readout["component_loading"].dims == ("mode", "component")
    assert readout["component_loading"].shape == (4, len(COMPONENTS))
    assert readout["unit_loading"].shape == (4, UNITS)
    assert readout["pca"].shape == (UNITS, 2) and "umap" not in readout
    np.testing.assert_allclose(float(readout["spectrum"].sum()), 1.0)
    layer_ev = readout["layer_explained_variance"]
    assert list(readout.layer.values) == ["L0", "L1", "embed", "unembed"]
    np.testing.assert_allclose(layer_ev.sum("layer_mode", skipna=True), 1.0)
    assert np.isnan(layer_ev.sel(layer="embed").values[1:]).all()
    # three latent patterns: the first three modes carry almost all the variance
    assert float(readout["explained_variance"][:3].sum()) > 0.95
    # standardized per component: rescaling one component's row changes nothing
    rescaled = chi.copy(data=chi.values * np.r_[1e4, np.ones(len(COMPONENTS) - 1)][:, None])
    again = checkpoint_readout(rescaled, settings)
    np.testing.assert_allclose(again["spectrum"], readout["spectrum"], atol=1e-10)
    np.testing.assert_allclose(again["pca"], readout["pca"], atol=1e-8)
    # PCA scores are σ_k v_k of the same decomposition
    np.testing.assert_allclose(
        readout["pca"].sel(axis=1), readout["singular_value"][0] * readout["unit_loading"][0]
    )


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(cols, rows)))
    return q.T


def test_mode_matching_recovers_a_known_permutation_and_signs():
    """Modes permuted and flipped between checkpoints (with a little drift): matching finds
    the permutation and the signs, and the tracked loadings follow the reference."""
    k, c = 5, 8
    reference = orthonormal(k, c, seed=1)
    perms = [np.array([2, 0, 4, 1, 3]), np.array([1, 0, 2, 4, 3]), np.arange(k)]
    signs = [np.array([1, -1, -1, 1, 1]), np.array([-1, 1, 1, -1, 1]), np.ones(k)]
    rng = np.random.default_rng(2)
    loadings = np.zeros((3, k, c))
    for t, (perm, sign) in enumerate(zip(perms, signs, strict=True)):
        drifted = reference + 0.05 * rng.normal(size=reference.shape) * (t < 2)
        loadings[t, perm] = drifted * sign[:, None]  # own mode perm[j] is tracked mode j
    matched = match_modes(loadings, reference=-1)
    for t in range(3):
        np.testing.assert_array_equal(matched["index"][t], perms[t])
        np.testing.assert_array_equal(matched["sign"][t], signs[t])
    assert (matched["cosine"] > 0.9).all()
    np.testing.assert_allclose(matched["loading"][2], reference)
    assert np.abs(matched["loading"][0] - reference).max() < 0.2
    # anchored on the first checkpoint instead: the same pairing, seen from there
    first = match_modes(loadings, reference=0)
    np.testing.assert_array_equal(first["index"][0], np.arange(k))
    for t in range(3):
        assert (np.diag(first["loading"][t] @ loadings[0].T) > 0.9).all()


def test_coordinate_correlation_on_a_known_subset():
    """Mode 2's unit loadings rise with position on the whitespace units only: Spearman ρ
    is 1 there, and the named and the given coordinate agree."""
    units = np.arange(30)
    position = units % 10
    is_space = units < 10
    loading = np.random.default_rng(0).normal(size=(3, 30))
    loading[1, is_space] = np.exp(position[is_space])  # monotone, not linear
    loading[2] = -position  # ties: ρ = -1 over any subset
    da = xr.DataArray(
        loading,
        dims=("mode", "unit"),
        coords={"mode": [1, 2, 3], "unit": units, "position": ("unit", position)},
    )
    rho = coordinate_correlation(da, "position", units=is_space)
    assert rho.dims == ("mode",)
    np.testing.assert_allclose(rho.sel(mode=[2, 3]).values, [1.0, -1.0])
    same = coordinate_correlation(da, position.astype(float), units=is_space)
    np.testing.assert_allclose(same.values, rho.values)
    assert np.isnan(coordinate_correlation(da, np.ones(30)).values).all()
    with pytest.raises(KeyError, match="no unit coordinate"):
        coordinate_correlation(da, "run_position")


def test_umap_embedding_is_reproducible_with_a_seed(store):
    chi = chi_of(store, 0)
    settings = ChiMapSettings(n_modes=3, umap_neighbors=8, seed=7)
    first = checkpoint_readout(chi, settings)["umap"].values
    second = checkpoint_readout(chi, settings)["umap"].values
    assert first.shape == (UNITS, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    other = checkpoint_readout(chi, ChiMapSettings(n_modes=3, umap_neighbors=8, seed=8))
    assert not np.array_equal(other["umap"].values, first)


def test_map_is_written_next_to_chi_and_read_back(store):
    before = set(open_chi(store).variables)
    settings = ChiMapSettings(n_modes=4, umap=True, umap_neighbors=8)
    ds = write_chi_map(store, settings)
    assert set(open_chi(store).variables) == before  # χ's own view is unchanged
    read = open_chi_map(store)
    xr.testing.assert_identical(read, ds)
    assert read.sizes == {
        "checkpoint": 3,
        "mode": 4,
        "track": 4,
        "component": len(COMPONENTS),
        "unit": UNITS,
        "axis": 2,
        "rank": len(COMPONENTS),
        "layer": 4,
        "layer_mode": 3,
    }
    assert read["unit_loading"].dims == ("checkpoint", "mode", "unit")
    assert read["umap"].dims == read["pca"].dims == ("checkpoint", "unit", "axis")
    assert list(read.checkpoint.values) == STEPS and read.attrs["reference_checkpoint"] == 100
    assert list(map(str, read.component.values)) == COMPONENTS
    for name, values in unit_coords().items():
        assert [str(v) for v in read[name].values] == [str(v) for v in values]
    assert read["map_current"].values.all()
    np.testing.assert_allclose(read["spectrum"].sum("rank"), 1.0)
    np.testing.assert_array_equal(read["matched_mode"].sel(checkpoint=100), [1, 2, 3, 4])
    tracked = read["tracked_loading"].sel(checkpoint=0).values
    own = read["component_loading"].sel(checkpoint=0).values[read["matched_mode"][0].values - 1]
    np.testing.assert_allclose(tracked, own * read["matched_sign"][0].values[:, None])
    # the generic readout the spacing fin metric builds on: ρ per checkpoint and mode
    rho = coordinate_correlation(read["unit_loading"], "position", read["pattern_class"] == "space")
    assert rho.dims == ("checkpoint", "mode") and np.isfinite(rho.values).all()
    # the readout is what a checkpoint's own computation gives
    alone = checkpoint_readout(chi_of(store, 50), settings)
    np.testing.assert_allclose(read["umap"].sel(checkpoint=50), alone["umap"])
    # a rerun reuses every part; a checkpoint whose χ changes is recomputed, and flagged
    assert compute_checkpoint_map(store, 50, settings)["status"] == "in-store"
    write_chi(store, 50, 2 * chi_of(store, 0).values)
    assert list(open_chi_map(store)["map_current"].values) == [True, False, True]
    assert compute_checkpoint_map(store, 50, settings)["status"] == "computed"
    assert open_chi_map(store)["map_current"].values.tolist() == [True, False, True]
    write_chi_map(store, settings)
    assert open_chi_map(store)["map_current"].values.all()


def test_a_failed_write_leaves_no_partial_map(store, monkeypatch):
    settings = ChiMapSettings(n_modes=2, umap=False)
    write_chi_map(store, settings, steps=[0, 50])
    calls = []

    def fail(self, *args, **kwargs):
        calls.append(args)
        raise OSError("disk went away")

    monkeypatch.setattr(xr.Dataset, "to_zarr", fail)
    with pytest.raises(OSError, match="disk went away"):
        write_chi_map(store, settings)  # checkpoint 100 has no part yet
    monkeypatch.undo()
    assert calls
    assert list(open_chi_map(store).checkpoint.values) == [0, 50]  # the previous map, whole
    leftovers = [p.name for p in store.rglob(".*writing*")]
    assert leftovers == []
    assert sorted(p.name.split("-")[0] for p in (store / PARTS_GROUP).iterdir() if p.is_dir()) == [
        "step0",
        "step50",
    ]


def test_no_map_yet_is_a_clear_error(store):
    with pytest.raises(StoreError, match="has no map yet"):
        open_chi_map(store)


def test_cli_writes_the_page(store, tmp_path, capsys):
    out = tmp_path / "page"
    args = ["chi", "map", str(store), "--out", str(out), "--color-by", "position", "--no-umap"]
    assert main(args) == 0
    assert "page" in capsys.readouterr().out
    page = (out / "index.md").read_text()
    for step in STEPS:
        assert f"![embeddings](embeddings_step{step}.png)" in page
        assert (out / f"embeddings_step{step}.png").stat().st_size > 0
        assert (out / f"loadings_step{step}.png").stat().st_size > 0
    assert (out / "spectra.png").exists() and (out / "trajectories.png").exists()
    assert "## Modes over training" in page
    assert "umap" not in open_chi_map(store)
    assert main(["chi", "map", str(store), "--color-by", "nonsense"]) == 2
    assert "no unit coordinate ['nonsense']" in capsys.readouterr().err


def test_map_of_a_store_at_an_fsspec_url():
    url = "memory://chi-map-test/chi.zarr"
    create_store(
        url,
        checkpoints=[0, 1],
        components=["L0H0", "L0H1", "embed"],
        num_chains=1,
        num_draws=2,
        unit_coords={"position": np.arange(12)},
        attrs={},
    )
    rng = np.random.default_rng(0)
    for step in (0, 1):
        write_chi(url, step, rng.normal(size=(3, 12)))
    write_chi_map(url, ChiMapSettings(n_modes=2, umap=False))
    ds = open_chi_map(url)
    assert ds.sizes["checkpoint"] == 2 and ds["map_current"].all()
    assert list(ds["position"].values) == list(range(12))
