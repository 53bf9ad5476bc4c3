"""Feature extrapolation of dh and weight-ratio doses, on cases with known answers."""

import numpy as np
import pytest

from patterning_core.estimators.feature_extrapolation import (
    alpha_for_ratio,
    choose_rcond,
    decile_ratio,
    feature_solution_evaluation,
    fit_feature_solution,
    fit_ridge,
    heldout_evaluation,
    r_squared,
    sequence_halves,
    span_reach_by_sequences,
)
from patterning_core.estimators.intervention import weights_from_intervention


def test_ridge_recovers_a_linear_rule():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
    x = np.column_stack([x, np.ones(200)])  # a constant column drops out
    y = 0.5 + x[:, :3] @ np.array([2.0, -0.3, 7.0])
    model = fit_ridge(x, y, ridge=1e-12)
    np.testing.assert_allclose(model.predict(x), y, atol=1e-8)
    assert r_squared(y, model.predict(x)) == pytest.approx(1.0, abs=1e-12)


def test_sequence_halves_split_whole_sequences():
    seq = np.repeat(np.arange(10), 7)
    fit, held = sequence_halves(seq, seed=3)
    assert fit.sum() == held.sum() == 35
    assert not set(seq[fit]) & set(seq[held])
    with pytest.raises(ValueError, match="2 sequences"):
        sequence_halves(np.zeros(5, dtype=int))


def test_heldout_evaluation_when_features_explain_dh():
    """dh exactly linear in the features: held-out R² 1 and the extrapolated response equals
    the exact one; with features unrelated to dh, the held-out R² is near 0 or below."""
    rng = np.random.default_rng(1)
    units, comps = 400, 6
    seq = np.repeat(np.arange(40), 10)
    features = rng.standard_normal((units, 4))
    dh = features @ np.array([1.0, -2.0, 0.5, 0.0])
    chi = rng.standard_normal((comps, units))
    d_mu = 3.0 * chi @ dh  # the target that this dh produces (nβ = 3)
    fit, _ = sequence_halves(seq, seed=0)
    out = heldout_evaluation(chi, dh, features, d_mu, 3.0, fit, ridge=1e-12)
    assert out["heldout_r2"] == pytest.approx(1.0, abs=1e-9)
    assert out["heldout_target_cosine"] == pytest.approx(out["exact_target_cosine"], abs=1e-9)
    noise = rng.standard_normal((units, 4))
    bad = heldout_evaluation(chi, dh, noise, d_mu, 3.0, fit, ridge=1e-3)
    assert bad["heldout_r2"] < 0.1


def test_decile_ratio_and_the_alpha_that_gives_it():
    assert decile_ratio(np.arange(1, 101, dtype=float)) == pytest.approx(95.5 / 5.5)
    assert decile_ratio(np.array([0.0] * 10 + [1.0] * 90)) == float("inf")
    # half the tokens +1, half −1: ρ = 1 ± α (mean 1), ratio (1 + α)/(1 − α) = 4 at α = 0.6
    d = np.array([1.0, -1.0] * 50)
    alpha = alpha_for_ratio(d, 4.0)
    assert alpha == pytest.approx(0.6, rel=1e-3)
    assert decile_ratio(weights_from_intervention(d, alpha)) == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(ValueError, match="exceed 1"):
        alpha_for_ratio(d, 1.0)
    # 5 % of the tokens strongly down-weighted, the rest alike: clipping those at 0 leaves
    # half of the bottom decile near the typical weight, so the ratio levels off near 2
    few = np.array([-1.0] * 5 + [0.05] * 95)
    with pytest.raises(ValueError, match="levels off"):
        alpha_for_ratio(few, 4.0)


def _chi_linear_in_features(rng, units, comps=6, n_features=8, unit_noise=0.0):
    """χ columns χ_z = A·x_z + unit-specific noise (σ = ``unit_noise``): the part of χ that
    weights built from the features can act on is A (times the features' covariance)."""
    features = rng.standard_normal((units, n_features))
    a = rng.standard_normal((comps, n_features))
    chi = features @ a.T + unit_noise * rng.standard_normal((units, comps))
    return chi.T, features


def test_feature_solution_reaches_a_reachable_target_exactly():
    """With F ≥ C features the response matrix nβ·χ̃·z has full row rank, so every target is
    met on the units solved on (cosine 1, and the response itself equals dμ); a held-out
    half that is a copy of the fit half responds identically."""
    rng = np.random.default_rng(2)
    chi, features = _chi_linear_in_features(rng, 300, unit_noise=0.5)
    d_mu = rng.standard_normal(6)
    model = fit_feature_solution(chi, features, d_mu, n_beta=3.0)
    assert model.intercept == 0.0
    np.testing.assert_allclose(3.0 * chi @ model.predict(features), d_mu, atol=1e-9)
    doubled_chi = np.concatenate([chi, chi], axis=1)
    doubled = np.concatenate([features, features])
    fit = np.arange(600) < 300
    out = feature_solution_evaluation(doubled_chi, doubled, d_mu, 3.0, fit)
    assert out["fit_target_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert out["heldout_target_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_feature_solution_held_out_error_shrinks_as_one_over_units():
    """Unit-specific χ (noise σ = 2 on columns whose feature part has σ ≈ 3) enters the
    held-out response only through its sample average over the held-out units, an error
    O(1/√n) in the response, so 1 − cosine (second order in it) falls ∝ 1/n: 16 times the
    units, about 16 times smaller (medians over 40 draws, whose spread, from the draws with a
    badly conditioned response matrix, allows a factor 2 either way: 8 to 32)."""
    gaps = {}
    for units in (400, 6400):
        vals = []
        for seed in range(40):
            rng = np.random.default_rng(100 + seed)
            chi, features = _chi_linear_in_features(rng, units, unit_noise=2.0)
            d_mu = rng.standard_normal(6)
            fit = np.arange(units) < units // 2
            out = feature_solution_evaluation(chi, features, d_mu, 1.0, fit)
            vals.append(1.0 - out["heldout_target_cosine"])
        gaps[units] = float(np.median(vals))
    assert 8 < gaps[400] / gaps[6400] < 32


def test_span_reach_grows_with_the_sequences_as_the_error_shrinks():
    """Sequences of 20 units, χ linear in the features plus unit noise: the held-out cosine
    rises with k toward 1. The error in the held-out response is O(1/√k), so 1 − cosine
    falls as 1/k once it is small and no slower than about 1/√k before: from 4 to 32
    sequences (8×) the gap at least halves. Sizes beyond half the sequences are skipped."""
    rng = np.random.default_rng(5)
    chi, features = _chi_linear_in_features(rng, 64 * 20, unit_noise=3.0)
    sequence = np.repeat(np.arange(64), 20)
    d_mu = rng.standard_normal(6)
    reach = span_reach_by_sequences(chi, features, d_mu, 1.0, sequence, [4, 16, 32, 40], draws=100)
    assert set(reach) == {4, 16, 32}
    assert reach[4] < reach[16] < reach[32] < 1
    assert 1 - reach[32] < 0.5 * (1 - reach[4])


def _one_reachable_component(rng, units):
    """Two components, two features: component 0 responds to feature 0 (χ = x₀ + noise),
    component 1 only to unit noise (σ = 1), so the response matrix's second direction is
    sample noise of size O(1/√units) and the target's component-1 part is unreachable."""
    x = rng.standard_normal((units, 2))
    chi = np.stack([x[:, 0] + rng.standard_normal(units), rng.standard_normal(units)])
    return chi, x


def test_choose_rcond_keeps_every_direction_when_all_are_real():
    """χ exactly linear in well-conditioned features (component c responds to feature c
    alone): every singular value of the response matrix is within sampling error of the
    others, far above the grid's largest truncation (0.1), so no rcond of the grid drops a
    direction, every rcond gives the same solution and score, and the tie goes to the
    smallest."""
    rng = np.random.default_rng(7)
    features = rng.standard_normal((40 * 20, 8))
    chi = features[:, :6].T.copy()
    sequence = np.repeat(np.arange(40), 20)
    rcond, scores = choose_rcond(chi, features, rng.standard_normal(6), 1.0, sequence)
    assert rcond == min(scores)
    np.testing.assert_allclose(list(scores.values()), scores[rcond], atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_rcond_drops_a_direction_that_is_only_sample_noise(seed):
    """Target dμ = (1, 1) with component 1 unreachable (:func:`_one_reachable_component`):
    the exact solution chases component 1 through the response matrix's noise direction
    (singular value ratio ≈ 1/√(2·units)), which does not transfer; truncating it leaves the
    response along component 0, whose held-out cosine with dμ is 1/√2 up to the held-out
    units' sampling error (component 1's response ~ 1/√n = 0.022 at n = 2,000, so ±0.06 at
    3σ). The chosen rcond must lie above that ratio, and fitted on 2,000 units the solution
    must reach 1/√2 on 2,000 fresh ones."""
    rng = np.random.default_rng(seed)
    chi, features = _one_reachable_component(rng, 100 * 20)
    sequence = np.repeat(np.arange(100), 20)
    d_mu = np.array([1.0, 1.0])
    rcond, scores = choose_rcond(chi, features, d_mu, 1.0, sequence)
    z = (features - features.mean(0)) / features.std(0)
    s = np.linalg.svd(chi @ z, compute_uv=False)
    assert rcond > s[1] / s[0]
    assert scores[rcond] > scores[min(scores)]
    fresh_chi, fresh_features = _one_reachable_component(rng, 2000)
    both_chi = np.concatenate([chi, fresh_chi], axis=1)
    both = np.concatenate([features, fresh_features])
    fit = np.arange(4000) < 2000
    out = feature_solution_evaluation(both_chi, both, d_mu, 1.0, fit, rcond)
    assert out["heldout_target_cosine"] == pytest.approx(2**-0.5, abs=0.06)


def test_span_reach_with_the_truncation_chosen_per_draw_keeps_the_reachable_part():
    """:func:`_one_reachable_component` in sequences of 20 units, dμ = (1, 1): solved exactly,
    the held-out response chases sample noise; with the truncation chosen in every draw on
    the sequences solved on, the median held-out cosine at k = 50 sequences (1,000 units)
    is 1/√2 within the response's sampling error (component 1 ~ 1/√1000 = 0.03 relative,
    ±0.1 allowed), and above the exact solution's."""
    rng = np.random.default_rng(11)
    chi, features = _one_reachable_component(rng, 100 * 20)
    sequence = np.repeat(np.arange(100), 20)
    d_mu = np.array([1.0, 1.0])
    chosen = span_reach_by_sequences(chi, features, d_mu, 1.0, sequence, [50], 10, rcond=None)
    exact = span_reach_by_sequences(chi, features, d_mu, 1.0, sequence, [50], 10)
    assert chosen[50] == pytest.approx(2**-0.5, abs=0.1)
    assert chosen[50] > exact[50]
