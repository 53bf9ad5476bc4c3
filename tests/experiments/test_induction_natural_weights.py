"""Natural-text induction weights on a constructed χ whose induction mode is planted."""

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.data.token_classes import TokenKinds
from patterning_core.estimators.feature_extrapolation import decile_ratio
from patterning_core.experiments.induction.natural_weights import (
    CONDITIONS,
    applied_target_cosine,
    natural_weights,
)
from patterning_core.experiments.induction.unit_features import predictable_units, unit_features
from patterning_core.sampling.config import ConfigError

STRINGS = ["a", "b", "c", "d", " e", " f", "(", ")", "  ", "g", "h", "i"]
COMPONENTS = ["embed", "L0H0", "L0H1", "L1H0", "L1H1", "L1H2", "unembed"]
SCORES = {"L0H0": 0.9, "L0H1": 0.05, "L1H0": 0.7, "L1H1": 0.05, "L1H2": 0.1}


def setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # 7 of the 12 ids: about a quarter of the units repeat a bigram of their context
    probes = torch.randint(0, 7, (16, 21), generator=g)
    train = torch.randint(0, 7, (60, 21), generator=g)
    predictable = predictable_units(probes).ravel()
    rng = np.random.default_rng(seed)
    units = predictable.size
    s = np.array([SCORES.get(c, 0.0) for c in COMPONENTS])
    u_circuit = np.where([c in SCORES for c in COMPONENTS], s - s[1:-1].mean(), 0.0)
    v_circuit = predictable - predictable.mean()
    # χ < 0 where the later circuit heads meet predictable units: they express them.
    chi = -1.5 * np.outer(u_circuit, v_circuit) / np.linalg.norm(v_circuit)
    chi += 3.0 * np.outer(rng.standard_normal(7), rng.standard_normal(units)) / np.sqrt(units)
    chi += 0.05 * rng.standard_normal(chi.shape) / np.sqrt(units)
    coords = {"component": COMPONENTS, "unit": np.arange(units)}
    return xr.DataArray(chi, dims=("component", "unit"), coords=coords), probes, train


def test_planted_mode_found_and_weights_at_the_dose():
    chi, probes, train = setup()
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, ratio=4.0)
    mode = out.summary["mode"]
    assert mode["found"] and mode["head_alignment"] > 0.8
    assert abs(mode["token_correlation"]) > 0.8
    # the planted mode carries the indicator, so the ceiling is at least the mode's r
    assert mode["token_ceiling"]["in_sample_r"] >= abs(mode["token_correlation"]) - 1e-9
    assert mode["token_ceiling"]["heldout_r"] > 0.8
    # dh follows the predictable indicator, which is a feature: held-out R² is high
    assert out.summary["extrapolation"]["induce"]["heldout_r2"] > 0.8
    assert out.summary["extrapolation"]["induce"]["heldout_target_cosine"] > 0.8
    for condition in CONDITIONS:
        w = out.weights[condition]
        assert w.shape == (60, 20) and w.dtype == np.float32
        assert w.mean() == pytest.approx(1.0, rel=1e-5)
        assert decile_ratio(w) == pytest.approx(4.0, rel=2e-3), condition
    # Induce up-weights the induction-predictable training units, Repress down-weights them
    pred = predictable_units(train)
    induce, repress = out.weights["induce"], out.weights["repress"]
    assert induce[pred].mean() > 1.2 * induce[~pred].mean()
    assert repress[pred].mean() < repress[~pred].mean() / 1.2
    # the probe weights of the extrapolator, on the training weights' scale
    assert out.probe["rho_induce"].shape == (probes.shape[0] * 20,)
    assert np.corrcoef(out.probe["dh_fit"], out.probe["dh"])[0, 1] > 0.9


def test_probes_must_match_chi():
    chi, probes, train = setup()
    with pytest.raises(ValueError, match="loss units"):
        natural_weights(chi, 30.0, SCORES, probes[:5], train, STRINGS)


def test_span_extrapolator_reaches_the_planted_target_and_reports_the_regression():
    """The planted mode's unit loadings are a feature (the predictable indicator), so the
    patterning equation solved in the features' span meets the target on held-out probes as
    well as the regression does, and the summary says which extrapolator made the weights."""
    chi, probes, train = setup()
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, extrapolator="span")
    ev = out.summary["extrapolation"]["induce"]
    assert ev["extrapolator"] == "span" and ev["heldout_r2"] is None
    assert ev["fit_target_cosine"] > 0.9 and ev["heldout_target_cosine"] > 0.8
    assert set(ev["regression"]) == {"heldout_r2", "heldout_target_cosine", "fit_r2"}
    pred = predictable_units(train)
    induce = out.weights["induce"]
    assert induce[pred].mean() > 1.2 * induce[~pred].mean()
    for condition in CONDITIONS:
        assert decile_ratio(out.weights[condition]) == pytest.approx(4.0, rel=2e-3)
    with pytest.raises(ValueError, match="extrapolator must be"):
        natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, extrapolator="knn")


def test_a_given_target_mode_is_steered_and_reported_as_given():
    """``target_mode`` replaces the search's choice: the weights steer along that mode, the
    summary says it was given and keeps the search's own answer (the planted mode, found),
    and ``found`` is false because the steered mode is not the induction mode. PC1 and modes
    beyond ``n_leading`` are refused."""
    chi, probes, train = setup()
    searched = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS).summary["mode"]
    other = next(row["mode"] for row in searched["table"][1:] if row["mode"] != searched["index"])
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, target_mode=other)
    mode = out.summary["mode"]
    assert mode["index"] == other and mode["target"] == "given" and not mode["found"]
    assert mode["search"] == {"index": searched["index"], "found": True}
    row = next(r for r in searched["table"] if r["mode"] == other)
    assert mode["head_alignment"] == row["head_alignment"]
    assert searched["target"] == "search" and searched["found"]
    for bad in (1, 9):
        with pytest.raises(ValueError, match="target_mode"):
            natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, target_mode=bad)


def test_balanced_weights_keep_every_position_at_its_total_and_the_dose():
    """The planted mode's tokens (repeated bigrams) are more common late in the context, so
    Induce's unbalanced weights favour late positions; balanced, every position's mean weight
    is 1 (exactly, when no weight is clipped at 0), the dose is still the ratio asked, and
    the held-out target cosine of the balanced weights is reported."""
    chi, probes, train = setup()
    plain = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS)
    assert plain.summary["position_profile"]["induce"]["late_over_early"] > 1.05
    assert not plain.summary["balance_positions"]
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, balance=True)
    assert out.summary["balance_positions"]
    for condition in ("induce", "repress", "control_random"):
        w = out.weights[condition]
        assert w.min() > 0  # nothing clipped, so the balance is exact
        np.testing.assert_allclose(w.mean(axis=0), 1.0, atol=1e-5)
        assert decile_ratio(w) == pytest.approx(4.0, rel=2e-3), condition
    # the circuit's tokens are still up-weighted within positions
    pred = predictable_units(train)
    induce = out.weights["induce"]
    assert induce[pred].mean() > 1.2 * induce[~pred].mean()
    assert out.summary["extrapolation"]["induce"]["balanced_heldout_target_cosine"] > 0.8


def test_probes_of_two_kinds_get_each_kinds_token_correlation():
    """With a ``synthetic`` unit coordinate (probes of natural and synthetic sequences), every
    mode's token correlation is also given over each kind alone, in the mode's orientation:
    the planted mode follows the indicator on both kinds, and over all units it is the
    table's own number."""
    chi, probes, train = setup()
    synthetic = np.repeat(np.arange(16) >= 12, 20)
    chi = chi.assign_coords(synthetic=("unit", synthetic))
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS)
    mode = out.summary["mode"]
    pred = predictable_units(probes).ravel()
    for row in mode["table"]:
        assert {"token_correlation_natural", "token_correlation_synthetic"} <= set(row)
    # χ < 0 where the circuit heads meet predictable units: r < 0 in the circuit's orientation
    assert mode["token_correlation"] < -0.8
    assert mode["token_correlation_natural"] < -0.8 and mode["token_correlation_synthetic"] < -0.8
    # a constructed check of the subset reading: the r over the natural units alone
    from patterning_core.estimators.decomposition import decompose
    from patterning_core.experiments.induction.mode_search import point_biserial

    modes = decompose(chi, "component")
    row = next(r for r in mode["table"] if r["mode"] == mode["index"])
    loading = modes["unit_loading"].sel(mode=row["mode"]).values * row["sign"]
    expected = point_biserial(loading[None, ~synthetic], pred[~synthetic])[0]
    assert row["token_correlation_natural"] == pytest.approx(expected)
    plain = natural_weights(chi.drop_vars("synthetic"), 30.0, SCORES, probes, train, STRINGS)
    assert "token_correlation_natural" not in plain.summary["mode"]


def test_cell_shuffle_keeps_each_class_and_sequence_kind_total():
    """The cell control permutes Induce's weights within pattern class × (synthetic or
    natural) × predictable cells: each cell's total and the dose stay, the tokens' weights
    do not."""
    chi, probes, train = setup()
    out = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS, n_synthetic=20)
    induce, cells = out.weights["induce"], out.weights["control_cell_shuffled"]
    assert not np.array_equal(induce, cells)
    classes = np.argmax(unit_features(train, TokenKinds.from_strings(STRINGS))[..., :8], -1)
    synthetic = np.broadcast_to((np.arange(60) >= 40)[:, None], classes.shape)
    predictable = predictable_units(train)
    for c in np.unique(classes):
        for kind in (False, True):
            for pred in (False, True):
                cell = (classes == c) & (synthetic == kind) & (predictable == pred)
                assert cells[cell].sum() == pytest.approx(induce[cell].sum(), rel=1e-5)
    assert decile_ratio(cells) == pytest.approx(decile_ratio(induce))


def test_class_neutral_weights_keep_every_class_at_mean_one_and_the_dose():
    """Class-neutral: each solved condition is ρ^p over its class mean, p giving the
    dose again, so every pattern class (and its shuffle, control b) has mean weight 1; the
    within-class order of the plain weights is kept, and the probe weights follow the same
    power. Steered along a mode that varies within the classes (the planted mode is the
    predictable indicator, nearly a class of its own: its class-neutral part cannot reach
    the dose, and that is refused with the fix named)."""
    chi, probes, train = setup()
    searched = natural_weights(chi, 30.0, SCORES, probes, train, STRINGS).summary["mode"]
    other = next(row["mode"] for row in searched["table"][1:] if row["mode"] != searched["index"])
    args = (chi, 30.0, SCORES, probes, train, STRINGS)
    plain = natural_weights(*args, ratio=4.0, target_mode=other)
    out = natural_weights(*args, ratio=4.0, target_mode=other, class_neutral=True)
    classes = np.argmax(unit_features(train, TokenKinds.from_strings(STRINGS))[..., :8], -1)
    powers = out.summary["dose"]["class_neutral_power"]
    assert set(powers) == {"induce", "repress", "control_random"}
    for condition in ("induce", "repress", "control_random", "control_shuffled"):
        w = out.weights[condition]
        assert w.dtype == np.float32 and w.shape == (60, 20)
        for c in np.unique(classes):
            assert w[classes == c].mean() == pytest.approx(1.0, rel=1e-5), (condition, c)
        # bisection stops within 1e-3 of the power: the ratio within about log(4)·1e-3
        assert decile_ratio(w) == pytest.approx(4.0, rel=5e-3), condition
    # within each class, ρ_neutral ∝ ρ_plain^p
    p = powers["induce"]
    for c in np.unique(classes):
        here = classes == c
        expected = plain.weights["induce"][here].astype(np.float64) ** p
        np.testing.assert_allclose(out.weights["induce"][here], expected / expected.mean(), 1e-4)
    # probe weights: the same power, so the probe ratio of two units is the plain one ^ p
    a, b = plain.probe["rho_induce"], out.probe["rho_induce"]
    codes = unit_features(probes, TokenKinds.from_strings(STRINGS))[..., :8].argmax(-1).ravel()
    for c in np.unique(codes):
        i, j = np.flatnonzero(codes == c)[[0, -1]]
        if a[j] > 0:
            assert b[i] / b[j] == pytest.approx((a[i] / a[j]) ** p, rel=1e-6)
    assert "class_neutral_power" not in plain.summary["dose"]
    with pytest.raises(ConfigError, match="class_neutral"):
        natural_weights(*args, ratio=4.0, class_neutral=True)


def test_applied_target_cosine_is_one_for_weights_that_solve_the_target_on_each_half():
    """Known answer: χ̃ rows centred over the units of each half (so a constant weight
    shift moves nothing on either half or on all), dh solving nβ·χ̃·dh = dμ exactly on each
    half, ρ = 1 + c·dh (c > 0 keeps it positive): the predicted response is along dμ on all
    units and on each half (cosine 1), and the mirrored weights 2 − ρ point against it
    (cosine −1)."""
    rng = np.random.default_rng(3)
    units, n_beta = 200, 30.0
    chi = rng.standard_normal((7, units))
    d_mu = rng.standard_normal(7)
    fit = np.arange(units) % 2 == 0
    for half in (fit, ~fit):
        chi[:, half] -= chi[:, half].mean(axis=1, keepdims=True)
    dh = np.zeros(units)
    for half in (fit, ~fit):
        dh[half] = np.linalg.lstsq(n_beta * chi[:, half], d_mu, rcond=None)[0]
    rho = 1.0 + 0.4 * dh / np.abs(dh).max()
    got = applied_target_cosine(chi, rho, d_mu, n_beta, fit)
    mirrored = applied_target_cosine(chi, 2.0 - rho, d_mu, n_beta, fit)
    for key in ("all", "fit_half", "heldout_half"):
        # float64 with an exact solution: rounding only
        assert got[key] == pytest.approx(1.0, abs=1e-9), key
        assert mirrored[key] == pytest.approx(-1.0, abs=1e-9), key
