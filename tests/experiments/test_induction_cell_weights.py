"""The cell design's pieces against answers known by construction."""

import numpy as np
import pytest

from patterning_core.estimators.feature_extrapolation import sequence_halves
from patterning_core.experiments.induction.cell_weights import (
    cell_indicators,
    circuit_target,
    solve_cells,
)
from patterning_core.experiments.induction.token_groups import GROUPS


def test_circuit_target_lowers_the_later_circuit_heads_and_ignores_the_rest():
    components = ["L0H0", "L0H1", "L1H0", "L1H1", "embed"]
    scores = {"L0H0": 0.0, "L0H1": 1.0, "L1H0": 0.0, "L1H1": 1.0}
    np.testing.assert_allclose(
        circuit_target(components, scores), [0.5, -0.5, 0.5, -0.5, 0.0], atol=1e-15
    )


def test_circuit_target_refuses_scores_that_say_nothing():
    with pytest.raises(ValueError, match="same circuit score"):
        circuit_target(["L0H0", "L0H1"], {"L0H0": 0.3, "L0H1": 0.3})
    with pytest.raises(ValueError, match="at least two"):
        circuit_target(["L0H0", "embed"], {"L0H0": 0.3})


def test_cell_indicators_are_one_hot_in_the_groups_order():
    syn = np.array([True, True, False, False])
    pred = np.array([True, False, True, False])
    np.testing.assert_array_equal(cell_indicators(syn, pred), np.eye(4))
    assert GROUPS == (
        "synthetic_predictable",
        "synthetic_other",
        "natural_predictable",
        "natural_other",
    )


def _constructed(n_seq: int = 20, per_seq: int = 30, seed: int = 0):
    """χ̃ whose every row is ±(the predictable indicator, standardized): each component's
    χ over the units is one pattern, the sign set by ``a``. Up-weighting the predictable
    units then moves every component by sign(a_C) times one number, so a target
    d = sign(a)/‖sign(a)‖ is reached exactly, by up-weighting the predictable cells."""
    rng = np.random.default_rng(seed)
    units = n_seq * per_seq
    syn = np.repeat(rng.random(n_seq) < 0.3, per_seq)
    pred = rng.random(units) < 0.4
    g = np.where(pred, 1.0, -1.0)
    g = (g - g.mean()) / g.std()
    a = np.array([1.0, -2.0, 0.5, 3.0])
    chi_std = np.sign(a)[:, None] * g[None, :]
    sequence = np.repeat(np.arange(n_seq), per_seq)
    return chi_std, cell_indicators(syn, pred), np.sign(a) / 2.0, sequence


def test_solve_cells_reaches_a_target_in_its_span_on_held_out_units():
    chi_std, cells, d_mu, sequence = _constructed()
    fit_mask, _ = sequence_halves(sequence, 0)
    sol = solve_cells(chi_std, cells, d_mu, 30.0, fit_mask)
    assert sol["heldout_target_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert sol["target_cosine"] == pytest.approx(1.0, abs=1e-9)
    dh = sol["model"].predict(cells)
    # the exact response: nβ·χ̃·dh/… proportional to d with a positive factor
    response = 30.0 * chi_std @ dh
    assert response @ d_mu > 0
    # predictable units up-weighted against the others, whichever sequence kind
    predictable = cells[:, 0] + cells[:, 2] > 0
    assert dh[predictable].min() > dh[~predictable].max()


def test_the_opposite_target_flips_every_cell():
    chi_std, cells, d_mu, sequence = _constructed(seed=1)
    fit_mask, _ = sequence_halves(sequence, 0)
    up = solve_cells(chi_std, cells, d_mu, 30.0, fit_mask)
    down = solve_cells(chi_std, cells, -d_mu, 30.0, fit_mask)
    for g in GROUPS:
        assert down["coef"][g] == pytest.approx(-up["coef"][g], abs=1e-12)
