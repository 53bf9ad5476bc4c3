"""Finding the induction mode on constructed χ whose answer is known."""

import numpy as np
import pytest
import xarray as xr

from patterning_core.estimators.decomposition import decompose
from patterning_core.experiments.induction.mode_search import (
    chain_sign_agreement,
    feature_span_modes,
    find_induction_mode,
    mode_agreement,
    point_biserial,
    token_ceiling,
)

HEADS = [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
COMPONENTS = ["embed", *HEADS, "unembed"]
# circuit scores: layer-0 head 1 previous-token, layer-1 heads 2, 3 induction
SCORES = dict.fromkeys(HEADS, 0.05) | {"L0H1": 0.9, "L1H2": 0.8, "L1H3": 0.6}


def constructed_chi(seed: int = 0, n_units: int = 400, noise: float = 0.05):
    """χ = 3·u1 v1ᵀ (a mode on every component alike, unrelated to the circuit) +
    1.5·u2 v2ᵀ (u2 ∝ the centred scores on the heads; v2 = the predictable indicator, centred)
    + noise. Returns (χ, predictable)."""
    rng = np.random.default_rng(seed)
    predictable = rng.random(n_units) < 0.3
    u1 = np.ones(len(COMPONENTS)) + 0.3 * rng.standard_normal(len(COMPONENTS))
    v1 = rng.standard_normal(n_units)
    s = np.array([SCORES.get(c, np.mean(list(SCORES.values()))) for c in COMPONENTS])
    u2 = s - s.mean()
    v2 = predictable - predictable.mean()
    chi = 3 * np.outer(u1 / np.linalg.norm(u1), v1 / np.linalg.norm(v1))
    chi += 1.5 * np.outer(u2 / np.linalg.norm(u2), v2 / np.linalg.norm(v2))
    chi += noise * rng.standard_normal(chi.shape) / np.sqrt(n_units)
    da = xr.DataArray(
        chi,
        dims=("component", "unit"),
        coords={"component": COMPONENTS, "unit": np.arange(n_units)},
    )
    return da, predictable


def test_point_biserial_is_pearson_with_indicator():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 50))
    y = rng.random(50) < 0.4
    expected = [np.corrcoef(row, y.astype(float))[0, 1] for row in x]
    np.testing.assert_allclose(point_biserial(x, y), expected, rtol=1e-12)
    assert point_biserial(np.ones((1, 50)), y)[0] == 0.0


def test_finds_the_planted_mode_not_the_leading_one():
    chi, predictable = constructed_chi()
    modes = decompose(chi, by="none")
    found = find_induction_mode(modes, SCORES, predictable, n_leading=4)
    assert found["found"] and found["mode"] == 2
    # u2 on the heads is the centred score pattern (its embed/unembed entries are 0): cos 1
    # up to the noise.
    assert found["head_alignment"] > 0.95
    # v2 is the centred indicator itself, so r ≈ 1 in the orientation of the heads
    assert found["token_correlation"] > 0.95
    assert found["table"][0]["head_alignment"] < 0.5


def test_reports_the_closest_miss():
    chi, predictable = constructed_chi()
    modes = decompose(chi, by="none")
    unrelated = np.random.default_rng(7).random(predictable.size) < 0.3
    found = find_induction_mode(modes, SCORES, unrelated, n_leading=4)
    assert not found["found"]
    assert abs(found["token_correlation"]) < 0.3


def test_seed_agreement_and_chain_signs():
    chi_a, predictable = constructed_chi(seed=0)
    modes_a = decompose(chi_a, by="none")
    chi_b = chi_a + 0.05 * np.random.default_rng(3).standard_normal(chi_a.shape) / 20
    modes_b = decompose(chi_b, by="none")
    assert mode_agreement(modes_a, 2, modes_b, 2) > 0.99
    assert mode_agreement(modes_a, 1, modes_a, 2) == pytest.approx(0.0, abs=0.05)
    # 8 chains: the pooled χ plus chain noise, one chain with the planted mode's sign flipped
    found = find_induction_mode(modes_a, SCORES, predictable, n_leading=4)
    rng = np.random.default_rng(5)
    chains = []
    v = modes_a["unit_loading"].sel(mode=2).values
    u = modes_a["component_loading"].sel(mode=2).values
    s = float(modes_a["singular_value"].sel(mode=2))
    for c in range(8):
        x = chi_a.values + 0.02 * rng.standard_normal(chi_a.shape) / 20
        if c == 5:
            x = x - 2 * s * np.outer(u, v)
        chains.append(x)
    per_chain = xr.DataArray(
        np.stack(chains, axis=1),
        dims=("component", "chain", "unit"),
        coords={"component": COMPONENTS, "chain": np.arange(8), "unit": chi_a.unit.values},
    )
    count, cosines = chain_sign_agreement(per_chain, modes_a, 2, found["sign"])
    assert count == 7 and cosines[5] < 0


def ceiling_chi(n_groups: int = 400, per_group: int = 50, p: float = 0.3, seed: int = 0):
    """Rows z_c = b_c·t + L + e_c: a planted indicator t, a level L shared by every row
    (variance 4, like χ's PC1) and independent noise e_c (variance σ² = 1). The best
    combination's population correlation with t is sqrt(q / (1 + q)) with
    q = p(1 − p)·bᵀΣ⁻¹b, Σ = σ²I + 4·11ᵀ (the noise the combination must see through)."""
    rng = np.random.default_rng(seed)
    n, k = n_groups * per_group, len(COMPONENTS)
    t = (rng.random(n) < p).astype(float)
    b = 0.3 * rng.standard_normal(k)
    rows = np.outer(b, t) + 2.0 * rng.standard_normal(n) + rng.standard_normal((k, n))
    chi = xr.DataArray(rows, dims=("component", "unit"), coords={"component": COMPONENTS})
    sigma = np.eye(k) + 4.0 * np.ones((k, k))
    q = p * (1 - p) * b @ np.linalg.solve(sigma, b)
    return chi, t, np.repeat(np.arange(n_groups), per_group), float(np.sqrt(q / (1 + q)))


def test_token_ceiling_recovers_the_known_best_correlation():
    chi, t, groups, expected = ceiling_chi()
    out = token_ceiling(chi, t, groups)
    # each fold: 10,000 held-out units, SE of r ≈ (1 − r²)/√10,000 < 0.01; fitting 19
    # coefficients on 10,000 units costs ≈ 19/10,000 of R², far below that: 4 SE.
    assert out["heldout_r"] == pytest.approx(expected, abs=0.04)
    assert all(f == pytest.approx(expected, abs=0.04) for f in out["folds"])
    assert set(out["weights"]) == set(COMPONENTS)


def test_token_ceiling_bounds_every_mode_in_sample():
    """A mode's unit loadings are a combination of the standardized rows, so the all-unit
    fit correlates with the indicator at least as well as any mode does."""
    chi, predictable = constructed_chi(noise=2.0)
    groups = np.arange(chi.sizes["unit"]) // 10
    out = token_ceiling(chi, predictable, groups)
    modes = decompose(chi)
    best_mode = np.abs(point_biserial(modes["unit_loading"].values, predictable)).max()
    assert out["in_sample_r"] >= best_mode - 1e-9


def test_token_ceiling_without_signal_is_near_zero():
    chi, t, groups, _ = ceiling_chi()
    shuffled = np.random.default_rng(1).permutation(t)
    # 20 000 units, two folds: |r| of noise ≈ 0.01; 0.04 is 4 SE
    assert abs(token_ceiling(chi, shuffled, groups)["heldout_r"]) < 0.04


def test_token_ceiling_needs_two_groups():
    chi, t, groups, _ = ceiling_chi(n_groups=2, per_group=5)
    with pytest.raises(ValueError, match="at least 2 sequences"):
        token_ceiling(chi, t, np.zeros_like(groups))


def test_feature_span_modes_find_a_mode_coupled_to_a_feature_and_beat_the_null():
    """χ of :func:`constructed_chi` with the features [predictable, two noise columns]: the
    circuit mode's unit loadings (the centred indicator) lie in the feature span, the shared
    mode's (a random vector) only by the ~sqrt(3/400) of it that any vector has, so inside
    the span the circuit mode leads: alignment and r ≈ 1 (up to the noise and the per
    component standardization), and no permuted χ comes close (p at its floor 1/(n+1))."""
    chi, predictable = constructed_chi(noise=0.01)
    rng = np.random.default_rng(3)
    features = np.column_stack([predictable, rng.standard_normal((predictable.size, 2))])
    out = feature_span_modes(chi, features, SCORES, predictable, n_leading=3, n_null=50)
    best = out["best"]
    assert best["mode"] == 1
    assert best["head_alignment"] > 0.95 and best["token_correlation"] > 0.95
    assert out["null"]["p_joint"] == pytest.approx(1 / 51)


def test_feature_span_modes_without_coupling_are_what_the_null_gives():
    """The circuit pattern on the components, but its unit loadings a random vector
    unrelated to the features: inside the span no mode both aligns and follows the
    indicator beyond what permuted χ gives (a uniform p: here, one seed, above 0.05)."""
    rng = np.random.default_rng(4)
    chi, predictable = constructed_chi(noise=0.01)
    s = np.array([SCORES.get(c, np.mean(list(SCORES.values()))) for c in COMPONENTS])
    u2 = (s - s.mean()) / np.linalg.norm(s - s.mean())
    shared = np.ones(len(COMPONENTS)) + 0.3 * rng.standard_normal(len(COMPONENTS))
    v1, v2 = rng.standard_normal((2, predictable.size))
    data = 3 * np.outer(shared, v1) + np.outer(u2, v2) + 0.01 * rng.standard_normal(chi.shape)
    uncoupled = chi.copy(data=data / np.sqrt(predictable.size))
    features = np.column_stack([predictable, rng.standard_normal((predictable.size, 2))])
    out = feature_span_modes(uncoupled, features, SCORES, predictable, n_leading=3, n_null=100)
    assert out["null"]["p_joint"] > 0.05


def test_feature_span_modes_check_shapes():
    chi, predictable = constructed_chi()
    with pytest.raises(ValueError, match="one row per unit"):
        feature_span_modes(chi, np.ones((3, 2)), SCORES, predictable)
