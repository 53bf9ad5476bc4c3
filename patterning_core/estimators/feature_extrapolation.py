"""Extrapolating the probes' solution dh to every training token from per-token features,
evaluated on held-out probes; and doses stated as weight ratios.

The patterning solution dh (``intervention.solve_intervention``: dμ = nβ·χ̃·dh on the
standardized χ̃, one dh per probe unit) exists only for the probe units. Training needs a
weight for every training token, so dh is regressed on features that every token has
(pattern class, in-context features, activations, …): ridge regression with an intercept on
standardized features, fitted on one half of the probe *sequences* and evaluated on the
other half (tokens of one context are not independent, so the split is by sequence).

Two held-out numbers (:func:`heldout_evaluation`):

- ``heldout_r2``: 1 − Σ(dh − dĥ)² / Σ(dh − mean dh)² over the held-out units;
- ``heldout_target_cosine``: the cosine, over components, between the response the
  *applied* (predicted) weights give on the held-out probes, nβ·χ̃[:, H]·dĥ[H], and the
  target dμ. ``exact_target_cosine`` is the same with the exact dh[H] (what the held-out
  half of the exact solution does on its own), the ceiling for the extrapolated one.

Solving in the features' span instead (:func:`fit_feature_solution`,
:func:`feature_solution_evaluation`): training weights are a function of the features, dh =
z·β (z the standardized features), so β can be chosen for the response itself rather than
for resembling the probes' exact dh: nβ·(χ̃[:, fit]·z[fit])·β = dμ, the minimum-norm
least-squares β (the patterning equation with the data units replaced by the feature
directions, as the class weights of the synthetic demonstration replace tokens by classes).
The exact per-unit dh spends most of its norm on unit-specific detail that no feature
carries, which the regression then discards, taking the target with it; this keeps only
what the features can express, and the held-out target cosine says whether that transfers.

Dose (:func:`decile_ratio`, :func:`alpha_for_ratio`): weights ρ = 1 + α·d/max|d| (negatives
clipped at 0, rescaled to mean 1, ``intervention.weights_from_intervention``); the *weight
ratio* is the mean ρ of the most up-weighted decile of tokens over the mean ρ of the most
down-weighted decile: 1 at α = 0, growing with α (∞ once the bottom decile is clipped to 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from patterning_core.estimators.intervention import weights_from_intervention


def sequence_halves(sequence: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(fit, held_out)`` over units: a random half of the distinct sequences
    (``sequence [units]``, the unit's probe sequence) fits, the others are held out."""
    seqs = np.unique(sequence)
    if len(seqs) < 2:
        raise ValueError("need probe units from at least 2 sequences to hold half out.")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(seqs)[: len(seqs) // 2]
    fit = np.isin(sequence, chosen)
    return fit, ~fit


def feature_scaling(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` per column of ``features [units, F]``; a constant column gets scale 1
    (it standardizes to 0 and drops out)."""
    x = np.asarray(features, dtype=np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 0, scale, 1.0)


@dataclass(frozen=True)
class RidgeFit:
    """dĥ = intercept + ((features − mean) / scale) @ coef."""

    coef: np.ndarray  # [F]
    intercept: float
    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``features [..., F]`` → dĥ ``[...]``."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return self.intercept + z @ self.coef


def fit_ridge(features: np.ndarray, target: np.ndarray, ridge: float = 1e-3) -> RidgeFit:
    """Ridge regression of ``target [units]`` on ``features [units, F]`` with an intercept.

    Features are standardized (constant columns get scale 1, so they drop out); ``ridge`` is
    the penalty per unit, λ·n·‖coef‖² added to the squared error (scale-free in n).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be [units, F] with units = {y.shape[0]}, got {x.shape}.")
    mean, scale = feature_scaling(x)
    z = (x - mean) / scale
    n, f = z.shape
    yc = y - y.mean()
    coef = np.linalg.solve(z.T @ z + ridge * n * np.eye(f), z.T @ yc)
    return RidgeFit(coef=coef, intercept=float(y.mean()), mean=mean, scale=scale)


def r_squared(target: np.ndarray, predicted: np.ndarray) -> float:
    """1 − SS_res/SS_tot (can be negative out of sample; 0 for a constant target)."""
    y = np.asarray(target, dtype=np.float64)
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    return 1.0 - float(((y - np.asarray(predicted)) ** 2).sum()) / total


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms > 0 else 0.0


def heldout_evaluation(
    chi_std: np.ndarray,
    dh: np.ndarray,
    features: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    fit_mask: np.ndarray,
    ridge: float = 1e-3,
) -> dict:
    """Fit dh on the ``fit_mask`` units, evaluate on the others (module doc).

    Args:
        chi_std: ``[components, units]`` standardized χ (the one dh solves).
        dh: ``[units]`` the exact probe solution.
        features: ``[units, F]``.
        d_mu: ``[components]`` the target.
        n_beta: nβ of the patterning equation dμ = nβ·χ̃·dh.
        fit_mask: ``bool [units]`` (``sequence_halves``).

    Returns ``fit`` (the :class:`RidgeFit`), ``fit_r2`` (in sample), ``heldout_r2``,
    ``heldout_target_cosine``, ``exact_target_cosine``, ``fit_units``, ``heldout_units``.
    """
    chi_std = np.asarray(chi_std, dtype=np.float64)
    held = ~np.asarray(fit_mask, dtype=bool)
    model = fit_ridge(features[fit_mask], dh[fit_mask], ridge)
    predicted = model.predict(features)
    response = n_beta * chi_std[:, held] @ predicted[held]
    exact = n_beta * chi_std[:, held] @ dh[held]
    return {
        "fit": model,
        "fit_r2": r_squared(dh[fit_mask], predicted[fit_mask]),
        "heldout_r2": r_squared(dh[held], predicted[held]),
        "heldout_target_cosine": cosine(response, np.asarray(d_mu, dtype=np.float64)),
        "exact_target_cosine": cosine(exact, np.asarray(d_mu, dtype=np.float64)),
        "fit_units": int(fit_mask.sum()),
        "heldout_units": int(held.sum()),
    }


def fit_feature_solution(
    chi_std: np.ndarray,
    features: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    rcond: float = 1e-6,
) -> RidgeFit:
    """dh = ((features − mean) / scale) @ β with nβ·χ̃·dh = dμ over the given units (module doc).

    Args:
        chi_std: ``[components, units]`` standardized χ of the units solved on.
        features: ``[units, F]`` (standardized here; constant columns drop out).
        d_mu: ``[components]`` the target.
        n_beta: nβ of the patterning equation.
        rcond: singular values of nβ·χ̃·z below ``rcond · σ_max`` are dropped.

    Returns a :class:`RidgeFit` with intercept 0 (a uniform up-weighting is undone by the
    weights' normalization to mean 1): ``predict`` gives dh for any unit's features.
    """
    chi_std = np.asarray(chi_std, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != chi_std.shape[1]:
        raise ValueError(
            f"features must be [units, F] with units = {chi_std.shape[1]}, got {x.shape}."
        )
    mean, scale = feature_scaling(x)
    response = n_beta * chi_std @ ((x - mean) / scale)  # [components, F]
    coef = np.linalg.lstsq(response, np.asarray(d_mu, dtype=np.float64), rcond=rcond)[0]
    return RidgeFit(coef=coef, intercept=0.0, mean=mean, scale=scale)


def feature_solution_evaluation(
    chi_std: np.ndarray,
    features: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    fit_mask: np.ndarray,
    rcond: float = 1e-6,
    held_mask: np.ndarray | None = None,
) -> dict:
    """:func:`fit_feature_solution` on the ``fit_mask`` units, read on ``held_mask`` (default:
    all the others): ``fit``, ``fit_target_cosine`` (what the fit units' response reaches:
    below 1 when the target is not in the features' reach) and ``heldout_target_cosine`` (the
    issue's number: the cosine of nβ·χ̃[:, H]·dh[H] with dμ), ``fit_units``,
    ``heldout_units``."""
    chi_std = np.asarray(chi_std, dtype=np.float64)
    fit_mask = np.asarray(fit_mask, dtype=bool)
    held = ~fit_mask if held_mask is None else np.asarray(held_mask, dtype=bool)
    model = fit_feature_solution(chi_std[:, fit_mask], features[fit_mask], d_mu, n_beta, rcond)
    dh = model.predict(features)
    d_mu = np.asarray(d_mu, dtype=np.float64)
    return {
        "fit": model,
        "fit_target_cosine": cosine(n_beta * chi_std[:, fit_mask] @ dh[fit_mask], d_mu),
        "heldout_target_cosine": cosine(n_beta * chi_std[:, held] @ dh[held], d_mu),
        "fit_units": int(fit_mask.sum()),
        "heldout_units": int(held.sum()),
    }


def span_reach_by_sequences(
    chi_std: np.ndarray,
    features: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    sequence: np.ndarray,
    sizes: Sequence[int],
    draws: int = 40,
    seed: int = 0,
    rcond: float | None = 1e-6,
) -> dict[int, float]:
    """How the span solution's held-out target cosine grows with the number of probe
    sequences: for each k in ``sizes``, ``draws`` random disjoint pairs of k sequences (one
    to solve on, :func:`fit_feature_solution`; one to read the response on), the median
    held-out cosine. What the sequences do not share enters the held-out response as an
    error O(1/√k), so the trend says how many probe sequences a target needs (``{k: median
    cosine}``; sizes above half the sequences are skipped). ``rcond``: the solution's
    truncation; None chooses it in every draw by :func:`choose_rcond` on the k sequences
    solved on (as the ``induce`` flow does), which k ≥ 2 allows."""
    chi_std = np.asarray(chi_std, dtype=np.float64)
    sequence = np.asarray(sequence)
    seqs = np.unique(sequence)
    d_mu = np.asarray(d_mu, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = {}
    for k in sizes:
        if 2 * k > len(seqs):
            continue
        cosines = []
        for _ in range(draws):
            chosen = rng.permutation(seqs)
            fit, held = np.isin(sequence, chosen[:k]), np.isin(sequence, chosen[k : 2 * k])
            truncation = rcond
            if truncation is None:
                truncation, _ = choose_rcond(
                    chi_std[:, fit], features[fit], d_mu, n_beta, sequence[fit], seed=seed
                )
            evaluation = feature_solution_evaluation(
                chi_std, features, d_mu, n_beta, fit, truncation, held
            )
            cosines.append(evaluation["heldout_target_cosine"])
        out[int(k)] = float(np.median(cosines))
    return out


RCOND_GRID = (1e-6, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""Truncation levels :func:`choose_rcond` tries (relative to the largest singular value)."""


def choose_rcond(
    chi_std: np.ndarray,
    features: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    sequence: np.ndarray,
    grid: Sequence[float] = RCOND_GRID,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The truncation of :func:`fit_feature_solution` chosen by cross-validation over the
    probe sequences of the units given (``chi_std [components, units]``, ``features [units,
    F]``, ``sequence [units]``): for every ``rcond`` of ``grid``, the solution on one half of
    the sequences read on the other (:func:`feature_solution_evaluation`), both ways round;
    the ``rcond`` with the largest mean held-out target cosine wins (ties: the smallest).

    Why: solved exactly (tiny ``rcond``) the span solution spends its norm on feature
    directions whose response is weak and sequence-specific, so on other sequences the
    response is mostly that noise; truncating the weak directions trades the fitted cosine
    for a held-out one. Pass only the units the solution is fitted on, so that the units the
    result is judged on play no part in the choice. Returns ``(rcond, {rcond: mean held-out
    cosine})``."""
    chi_std = np.asarray(chi_std, dtype=np.float64)
    first, second = sequence_halves(np.asarray(sequence), seed)
    scores = {}
    for rcond in grid:
        cosines = [
            feature_solution_evaluation(chi_std, features, d_mu, n_beta, fit, rcond, held)[
                "heldout_target_cosine"
            ]
            for fit, held in ((first, second), (second, first))
        ]
        scores[float(rcond)] = float(np.mean(cosines))
    best = max(scores, key=lambda r: (scores[r], -r))
    return best, scores


def decile_ratio(weights: np.ndarray) -> float:
    """Mean weight of the top 10 % of tokens over that of the bottom 10 % (∞ if that is 0)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    k = max(1, len(w) // 10)
    low = np.partition(w, k - 1)[:k].mean()  # the k smallest, in linear time
    high = np.partition(w, len(w) - k)[len(w) - k :].mean()
    return float(high / low) if low > 0 else float("inf")


def alpha_for_ratio(direction: np.ndarray, ratio: float, tol: float = 1e-4) -> float:
    """The α at which ``weights_from_intervention(direction, α)`` has ``decile_ratio`` =
    ``ratio`` (> 1), by bisection on α ∈ (0, α_max]; the ratio grows with α. Raises if even
    the largest α without clipping the bottom decile to 0 falls short."""
    if not ratio > 1:
        raise ValueError(f"a weight ratio must exceed 1, got {ratio}.")
    d = np.asarray(direction, dtype=np.float64).ravel()
    if not np.any(d):
        raise ValueError("the direction is zero: no α gives a weight ratio above 1.")

    def at(alpha: float) -> float:
        return decile_ratio(weights_from_intervention(d, alpha, "clip"))

    lo, hi = 0.0, 1.0
    while at(hi) < ratio:
        lo, hi = hi, 2 * hi
        if hi > 1e6:
            raise ValueError(
                f"no α reaches a weight ratio of {ratio} (it levels off at {at(hi):.2f}): "
                "fewer than a tenth of the tokens are down-weighted, so clipping them at 0 "
                "cannot empty the bottom decile; ask for a smaller ratio."
            )
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if at(mid) < ratio else (lo, mid)
    return hi
