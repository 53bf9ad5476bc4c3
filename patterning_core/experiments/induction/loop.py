"""Closing the loop: did χ measured again on the retrained models move as predicted?

The observable whose linear response defines χ is each component's localized loss
⟨φ_C⟩ (φ_C = L_fix(w) − L_fix(w*) under the restricted SGLD run of C, the store's
``phi_mean``): re-weighting the data by ρ moves it by, to first order,

    Δ⟨φ_C⟩ = nβ · Σ_z χ_Cz · dh_z,   dh_z = (ρ_z / ρ̄ − 1)/U

over U probe units standing in for the data (``predicted_shift``; raw χ as stored, no nβ
factor, so nβ enters here once). The weights are taken relative to their mean ρ̄ over the
probes, so that Σ_z dh_z = 0: χ_z = −Cov[φ, ℓ_z − L] is measured against a reference loss L
(the fixed batch L_fix), and only for a shift of zero total mass does that reference cancel
(Σ_z dh_z χ_z = −Cov[φ, Σ_z dh_z ℓ_z]); with Σ dh ≠ 0 the prediction would carry
(ρ̄ − 1)·Σ_z χ_z/U, the response to re-weighting the probes against L_fix's batch, which
the retraining (its loss normalized by Σρ) does not apply. ρ̄ differs from 1 when the
probes are not distributed as the training tokens the weights are normalized over (the
natural-text probes against a corpus with synthetic sequences).

That prediction is for the posterior at the fixed checkpoint; a retrained model is
measured at the matched checkpoint of its own run, where training has compounded the
change. So the comparison (:func:`compare_shift`) is of *direction* first (cosine over
components, and the heads' signs) and of size second (``gain``: the least-squares factor
of the measured shift on the predicted one, > 1 when training amplified it). Every
condition, the controls too, is also read along one common direction, Induce's predicted
shift (:func:`along_direction`): Induce should move the models along it, Repress against
it, and a control at the same dose not by as much.

What this comparison can confirm is limited by what it measures. nβ·χ·dh is the change of
⟨φ_C⟩ under the *re-weighted* law at the *same* w*. The loop measures the *unweighted* law
at the w* that re-weighted training reached. On linear regression, where both are exact
(``toys.known_answers.RegressionResponse.retrained_change``, tested in
``tests/core/test_retrained_response.py``), the second has no first-order term at all: a
converged retraining moves w* by O(ρ − 1) away from the unweighted minimum, the localized
law then slides downhill, and ⟨φ_C⟩ falls by O((ρ − 1)²) whatever the sign of the weights.
(Where training has not converged, a first-order term appears, −nβ·g*ᵀP⁻¹(2 − nβHP⁻¹)Δg with
g* the baseline checkpoint's own gradient and Δg the change of the gradient from moving w*:
set by where training stopped and where the weights moved w*, not by χ.) So the retrain-and-
measure shift is not the first-order response that χ predicts, even where that response is
exact; in a network, what it adds is development (the retrained w* has different curvature),
which χ at the old checkpoint does not describe.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def localized_loss(stats: xr.Dataset, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [component], se [component])`` of ⟨φ_C⟩ over chains (draw-count weighted
    mean; SE from the spread of the chain means) from a store's statistics
    (``chi_store.read_stats``)."""
    phi = stats["phi_mean"]
    count = stats["count"]
    if "checkpoint" in phi.dims:
        phi, count = phi.sel(checkpoint=step), count.sel(checkpoint=step)
    phi = phi.transpose("component", "chain").values.astype(np.float64)
    count = count.transpose("component", "chain").values.astype(np.float64)
    mean = (phi * count).sum(axis=1) / count.sum(axis=1)
    chains = phi.shape[1]
    se = phi.std(axis=1, ddof=1) / np.sqrt(chains) if chains > 1 else np.full(len(mean), np.nan)
    return mean, se


def predicted_shift(chi: np.ndarray, rho: np.ndarray, n_beta: float) -> np.ndarray:
    """``[component]`` first-order Δ⟨φ_C⟩ = nβ·Σ_z χ_Cz (ρ_z/ρ̄ − 1)/U for weights ``rho
    [U]`` on the probe units (``chi [component, U]`` raw, as stored; ρ̄ the weights' mean
    over the units: module doc)."""
    chi = np.asarray(chi, dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    if chi.shape[1] != rho.shape[0]:
        raise ValueError(f"χ over {chi.shape[1]} units, weights over {rho.shape[0]}.")
    if not rho.mean() > 0:
        raise ValueError("The weights' mean over the probe units must be positive.")
    return n_beta * chi @ (rho / rho.mean() - 1.0) / rho.shape[0]


def compare_shift(
    measured: np.ndarray, predicted: np.ndarray, components: list[str]
) -> dict[str, float | int]:
    """Direction and size of a measured shift against its prediction over components:
    ``cosine``, ``gain`` (Σ m·p / Σ p²), and over the heads (names ``L<l>H<h>``)
    ``head_signs_agree`` of ``heads`` (sign of m equal to sign of p)."""
    m = np.asarray(measured, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    norms = np.linalg.norm(m) * np.linalg.norm(p)
    heads = np.array([c.startswith("L") and "H" in c for c in components])
    return {
        "cosine": float(m @ p / norms) if norms > 0 else 0.0,
        "gain": float(m @ p / (p @ p)) if p @ p > 0 else float("nan"),
        "head_signs_agree": int((np.sign(m[heads]) == np.sign(p[heads])).sum()),
        "heads": int(heads.sum()),
    }


def along_direction(
    measured: np.ndarray, se: np.ndarray, direction: np.ndarray
) -> tuple[float, float]:
    """``(value, se)`` of the projection of a measured shift ``[component]`` on the unit
    vector of ``direction`` ``[component]``; its standard error from the components' ``se``
    as independent (each component's ⟨φ_C⟩ comes from its own restricted chains)."""
    d = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(d)
    if norm == 0:
        raise ValueError("The direction is zero: nothing to project on.")
    unit = d / norm
    value = float(unit @ np.asarray(measured, dtype=np.float64))
    return value, float(np.sqrt((unit**2) @ np.asarray(se, dtype=np.float64) ** 2))
