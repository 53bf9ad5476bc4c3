"""Decomposition of χ: standardization conventions and recovery of planted modes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from patterning_core.estimators.decomposition import decompose, standardize, top_units


def planted_chi(seed: int = 0) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    """A rank-2 χ with known component and unit patterns, rows on different scales."""
    rng = np.random.default_rng(seed)
    comps, units = 6, 40
    a = np.array([1, 1, 1, -1, -1, -1.0]) / np.sqrt(6)
    b = np.array([1, -1, 0, 1, -1, 0.0]) / 2
    va, vb = rng.normal(size=units), rng.normal(size=units)
    va -= va.mean()
    vb -= vb.mean()
    vb -= va * (va @ vb) / (va @ va)  # orthogonal patterns
    va, vb = va / np.linalg.norm(va), vb / np.linalg.norm(vb)
    matrix = 5 * np.outer(a, va) + 2 * np.outer(b, vb)
    chi = xr.DataArray(
        matrix,
        dims=("component", "unit"),
        coords={
            "component": [f"c{i}" for i in range(comps)],
            "unit": np.arange(units),
            "token_text": ("unit", [f"t{i}" for i in range(units)]),
        },
    )
    return chi, va, vb


def test_standardize_conventions():
    chi, *_ = planted_chi()
    scaled = chi * xr.DataArray(np.arange(1, 7.0), dims="component")
    by_component = standardize(scaled, "component")
    np.testing.assert_allclose(by_component.mean("unit"), 0, atol=1e-12)
    np.testing.assert_allclose(by_component.std("unit"), 1)
    # Per-component standardization removes the per-row scale entirely.
    np.testing.assert_allclose(by_component, standardize(chi, "component"), atol=1e-12)
    by_unit = standardize(chi, "unit")
    np.testing.assert_allclose(by_unit.mean("component"), 0, atol=1e-12)
    assert standardize(chi, "none") is chi
    with pytest.raises(ValueError, match="standardize by"):
        standardize(chi, "rows")


def test_decompose_recovers_planted_modes():
    chi, va, vb = planted_chi()
    modes = decompose(chi, by="none")
    np.testing.assert_allclose(modes.singular_value[:2], [5, 2], rtol=1e-10)
    np.testing.assert_allclose(modes.explained_variance[:2], [25 / 29, 4 / 29], rtol=1e-10)
    assert abs(abs(modes.unit_loading.sel(mode=1).values @ va) - 1) < 1e-10
    assert abs(abs(modes.unit_loading.sel(mode=2).values @ vb) - 1) < 1e-10
    # Sign convention: the largest-magnitude component loading is positive.
    for m in (1, 2):
        loading = modes.component_loading.sel(mode=m).values
        assert loading[np.abs(loading).argmax()] > 0
    top = top_units(modes, 1, k=3)
    assert [r["unit"] for r in top] == list(
        np.argsort(-np.abs(modes.unit_loading.sel(mode=1).values))[:3]
    )
    assert top[0]["token_text"] == f"t{top[0]['unit']}"


def test_decompose_rejects_unassembled_chi():
    chi, *_ = planted_chi()
    with pytest.raises(ValueError, match="non-finite"):
        decompose(chi.where(chi.unit != 3))


def test_induction_mode_is_found_by_alignment_not_position():
    """χ with a uniform PC1 and a second mode on the heads whose scores rise: the mode that
    tracks the scores is identified, with its correlation."""
    from patterning_core.estimators.decomposition import aligned_mode, mode_alignment

    rng = np.random.default_rng(1)
    heads = [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
    scores = {
        "L0H0": 0.01,
        "L0H1": 0.02,
        "L0H2": 0.01,
        "L0H3": 0.02,
        "L1H0": 0.05,
        "L1H1": 0.7,
        "L1H2": 0.6,
        "L1H3": 0.04,
    }
    shape = np.array([scores[h] for h in heads])
    shape = (shape - shape.mean()) / np.linalg.norm(shape - shape.mean())
    units = 50
    common, special = rng.normal(size=units), rng.normal(size=units)
    matrix = 4 * np.outer(np.ones(len(heads)) / np.sqrt(8), common) + np.outer(shape, special)
    matrix += 0.01 * rng.normal(size=matrix.shape)
    chi = xr.DataArray(
        matrix, dims=("component", "unit"), coords={"component": heads, "unit": np.arange(units)}
    )
    modes = decompose(chi, by="none")
    mode, alignment = aligned_mode(modes, scores)
    assert mode == 2 and abs(alignment) > 0.99
    # PC1 loads uniformly on all heads: not aligned, though it carries most variance.
    assert abs(mode_alignment(modes, scores).sel(mode=1)) < 0.2
    with pytest.raises(ValueError, match="at least 3"):
        aligned_mode(modes, {"L1H1": 0.7})
