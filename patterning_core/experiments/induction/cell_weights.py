"""Weights from χ through cells: the circuit as target, one weight per cell of tokens.

A design for when per-token χ is too noisy to extrapolate token by token (the natural-text
substrate: held-out target cosines of 0.04–0.14 for the feature span). Two choices differ
from ``natural_weights``:

- **Target: the circuit**, not an SVD mode (:func:`circuit_target`): dμ_C = −(s_C − mean s)
  over the heads, s the heads' later circuit scores (layer-0 previous-token, layer-1 prefix
  matching), 0 for the other components. Induce asks the heads that later form the circuit
  to lower their localized loss ⟨φ_C⟩ relative to the other heads (the sign rule of
  ``estimators.mode_weights.induce_sign``); Repress is −dμ.
- **Extrapolator: cells** (:func:`cell_indicators`): the patterning equation
  nβ·χ̃·dh = dμ solved in the span of four indicators that every training token has
  (synthetic or natural sequence × predictable by copying or not: ``token_groups.GROUPS``),
  so each cell's weight follows the sum of its probe units' χ, whose noise averages over the
  cell (method.md §8: the sum of per-token χ over a subset is the susceptibility toward that
  subset).

χ is as stored (χ_z(φ_C) = −Cov[φ_C, ℓ_z − L], no nβ factor), standardized per component
before solving (χ̃); nβ enters once, in the equation. Shapes: χ ``[component, unit]``,
cells ``[unit, 4]`` (probes) and ``[N, T − 1, 4]`` (training units).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from patterning_core.estimators.feature_extrapolation import (
    cosine,
    feature_solution_evaluation,
    fit_feature_solution,
)
from patterning_core.experiments.induction.token_groups import GROUPS


def circuit_target(components: list[str], scores: Mapping[str, float]) -> np.ndarray:
    """``[components]`` unit vector dμ: −(s − mean s) over the components that have a score
    (the heads), 0 for the others (embed, unembed)."""
    heads = [c for c in components if c in scores]
    if len(heads) < 2:
        raise ValueError(
            f"circuit scores name {len(heads)} of the components {components}: at least two "
            "heads need a later circuit score (reference.later_scores)."
        )
    s = np.array([float(scores[c]) for c in heads])
    if np.ptp(s) == 0:
        raise ValueError("every head has the same circuit score: the target would be zero.")
    d_mu = np.zeros(len(components))
    for c, v in zip(heads, -(s - s.mean()), strict=True):
        d_mu[components.index(c)] = v
    return d_mu / np.linalg.norm(d_mu)


def cell_indicators(synthetic: np.ndarray, predictable: np.ndarray) -> np.ndarray:
    """``float64 [..., 4]`` one-hot cells of :data:`GROUPS` from two boolean arrays of the
    same shape (unit from a synthetic sequence; unit predictable by copying)."""
    syn = np.asarray(synthetic, dtype=bool)
    pred = np.asarray(predictable, dtype=bool)
    if syn.shape != pred.shape:
        raise ValueError(f"synthetic {syn.shape} and predictable {pred.shape} differ in shape.")
    cells = {
        "synthetic_predictable": syn & pred,
        "synthetic_other": syn & ~pred,
        "natural_predictable": ~syn & pred,
        "natural_other": ~syn & ~pred,
    }
    return np.stack([cells[g] for g in GROUPS], axis=-1).astype(np.float64)


def solve_cells(
    chi_std: np.ndarray,
    cells: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    fit_mask: np.ndarray,
) -> dict:
    """The cell solution on all probe units and its held-out check.

    Returns ``model`` (a ``RidgeFit``: ``model.predict(cells)`` is dĥ of any unit),
    ``coef`` per cell, ``heldout_target_cosine`` (fitted on ``fit_mask``, the cosine of
    nβ·χ̃·dĥ over the other units with dμ), ``fit_target_cosine`` and ``target_cosine``
    (the all-unit fit's response against dμ)."""
    held = feature_solution_evaluation(chi_std, cells, d_mu, n_beta, fit_mask)
    model = fit_feature_solution(chi_std, cells, d_mu, n_beta)
    return {
        "model": model,
        "coef": dict(zip(GROUPS, model.coef.tolist(), strict=True)),
        "heldout_target_cosine": held["heldout_target_cosine"],
        "fit_target_cosine": held["fit_target_cosine"],
        "target_cosine": cosine(n_beta * chi_std @ model.predict(cells), d_mu),
    }
