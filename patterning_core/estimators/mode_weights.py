"""Data weights along a χ mode: the patterning recipe of method.md §6–7 for a mode picked by
how its component loadings align with a score pattern over the components (e.g. the
heads' later prefix-matching scores for the induction circuit, or their spacing scores).
"Induce" moves the structure toward the high-scoring components, "Repress" away (a
reconstruction of the paper's induction experiment, whose exact protocol is unknown).

Inputs: χ ``(component, unit)`` at a checkpoint before the circuit forms, exactly as stored
(``store.assemble_chi``: χ_z(φ_C) = −Cov[φ_C, ℓ_z − L], **no nβ factor**; χ < 0: the
component *expresses* unit z, up-weighting z lowers its localized loss ⟨φ_C⟩), and each
head's *later* prefix-matching score (e.g. at the reference run's last checkpoint).

Steps (:func:`induction_weights`):

1. Standardize χ per component (row centred over units, divided by its std): the
   δ-localization scales each row by an unknown Z_C/Z (method.md §2), so only standardized
   rows are comparable. Centring also removes from each row its response to a uniform
   re-weighting, which training's normalization Σρℓ/Σρ cancels anyway; every solution
   below therefore has Σ_z dh_z = 0 (a pure re-distribution of weight).
2. Decompose (``decomposition.decompose``) and pick the induction mode k with
   ``decomposition.aligned_mode``: the mode whose component loadings u_k have the largest
   |cosine| with the centred head scores (reported, with every mode's alignment).
3. Sign (:func:`induce_sign`). Induce = dμ = s·u_k with s chosen so that the
   score-weighted change of the heads' localized losses is negative,
   Σ_C (score_C − mean score)·dμ_C < 0: the heads that later become induction heads lower
   their ⟨φ_C⟩ relative to the others, i.e. express their units more (χ < 0 convention).
   So s = −sign(alignment). Repress = −Induce. The sign is fixed by this definition, not by
   the SVD's arbitrary sign (``decompose`` only makes the largest component loading > 0).
4. Solve dh = (1/nβ)·χ̃†·dμ on the standardized χ̃ (``intervention.solve_intervention``,
   singular values below ``rcond·σ_max`` dropped). dμ is then in units of each
   component's χ standard deviation; nβ (the store's ``n_beta``) enters only here, as the
   1/nβ of the patterning equation dμ = nβ·χ·dh. Because the target is a left singular
   vector, dh ∝ the mode's unit loadings v_k.
5. Extrapolate dh from the probe units to every training unit by its pattern class
   (``intervention.extrapolate_by_class``: the class mean of dh over the probes; R² says
   how much of dh the class means explain; a class never seen among probes gets dh = 0).
6. ρ = 1 + α·dh/max|dh| on the training units, negatives clipped at 0 (or shifted), then
   rescaled to mean 1 (``intervention.weights_from_intervention``). With class-constant
   dh, α is the relative change, before the rescaling, of the class whose |dh| is
   largest. Default rule (:data:`DEFAULT_ALPHA` = 1): the largest α that needs no clipping;
   the most changed class is removed (ρ = 0) by one condition and doubled by the other.

Weights are ``float32 [N, T − 1]``, aligned with the loss units of
``transformer.per_token_loss`` (unit (b, t) predicts token t + 1; it gets that token's class,
``data.token_classes.for_units``), the shape ``training.train(weights=...)`` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import (
    aligned_mode,
    decompose,
    mode_alignment,
    standardize,
)
from patterning_core.estimators.intervention import (
    NegativePolicy,
    extrapolate_by_class,
    mode_target,
    predicted_response,
    raw_weights,
    solve_intervention,
    weights_from_intervention,
)

CONDITIONS = ("induce", "repress")
DEFAULT_ALPHA = 1.0
ALPHA_RULE = (
    "α = relative change, before rescaling to mean weight 1, of the class whose |dh| is "
    "largest (ρ = 1 + α·dh/max|dh|). Default α = 1: the largest value that needs no clipping; "
    "that class is removed (ρ = 0) by one condition and doubled by the other."
)
SIGN_RULE = (
    "Induce: dμ = s·u_k with s such that Σ_C (score_C − mean score)·dμ_C < 0 over the heads "
    "(the heads with high later prefix-matching score lower their localized loss ⟨φ_C⟩ "
    "relative to the others, i.e. express their units more; χ < 0 = expresses), so "
    "s = −sign(alignment). Repress: dμ = −s·u_k."
)


# --------------------------------------------------------------------------- sign and target


def induce_sign(modes: xr.Dataset, mode: int, scores: Mapping[str, float]) -> float:
    """The sign s (±1) of Induce's target dμ = s·u_mode (see :data:`SIGN_RULE`).

    s makes the score-weighted change Σ_C (score_C − mean score)·dμ_C over the heads named
    in ``scores`` negative. Raises if u_mode has no projection on the centred scores.
    """
    names = [c for c in map(str, modes.component.values) if c in scores]
    pattern = np.array([scores[c] for c in names], dtype=np.float64)
    pattern -= pattern.mean()
    loading = modes["component_loading"].sel(mode=mode, component=names).values
    projection = float(loading @ pattern)
    if projection == 0.0:
        raise ValueError(f"mode {mode} does not load on the score pattern: no Induce sign.")
    return -float(np.sign(projection))


def score_weighted_change(d_mu: Mapping[str, float], scores: Mapping[str, float]) -> float:
    """Σ_C (score_C − mean score)·dμ_C over the heads in both mappings (< 0 for Induce)."""
    names = [c for c in d_mu if c in scores]
    pattern = np.array([scores[c] for c in names], dtype=np.float64)
    return float(np.dot(pattern - pattern.mean(), [d_mu[c] for c in names]))


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class ClassWeights:
    """ρ per class for one condition.

    ``weights``: ρ of each class after clipping and rescaling (mean over training units 1);
    ``fraction_clipped``: share of training units whose 1 + α·dh/max|dh| was < 0;
    ``fraction_zero``: share of training units left with ρ = 0 (clipped, or exactly 0).
    """

    weights: dict[str, float]
    fraction_clipped: float
    fraction_zero: float


def class_weight_table(
    class_dh: Mapping[str, float],
    class_fraction: Mapping[str, float],
    alpha: float,
    negative: NegativePolicy = "clip",
) -> ClassWeights:
    """ρ per class from class-constant dh, weighted by each class's share of training units.

    Equivalent to ``weights_from_intervention`` on the full ``[N, T − 1]`` array (same
    normalization by max|dh| over the classes present, same clip/shift, mean 1 over units).
    """
    names = [c for c in class_fraction if class_fraction[c] > 0]
    dh = np.array([class_dh.get(c, 0.0) for c in names])
    share = np.array([class_fraction[c] for c in names])
    raw = raw_weights(dh, alpha)
    rho = weights_from_intervention(dh, alpha, negative, counts=share)
    return ClassWeights(
        weights={c: float(r) for c, r in zip(names, rho, strict=True)},
        fraction_clipped=float(share[raw < 0].sum()),
        fraction_zero=float(share[rho == 0].sum()),
    )


def weights_for_units(
    class_dh: Mapping[str, float],
    codes: np.ndarray,
    names: Sequence[str],
    alpha: float,
    negative: NegativePolicy = "clip",
) -> np.ndarray:
    """ρ ``float32 [N, T − 1]`` for training units with class ``names[codes]``.

    dh of a unit is its class's mean dh (0 for a class without probes), then
    ``weights_from_intervention`` (ρ = 1 + α·dh/max|dh|, negative rule, mean 1).
    """
    per_code = np.array([class_dh.get(str(n), 0.0) for n in names], dtype=np.float64)
    dh = per_code[codes]
    rho = weights_from_intervention(dh.ravel(), alpha, negative)
    return rho.reshape(codes.shape).astype(np.float32)


# --------------------------------------------------------------------------- the whole recipe


@dataclass
class ModeWeights:
    """Weights ``{"induce", "repress"}: float32 [N, T − 1]`` and a JSON-able summary."""

    weights: dict[str, np.ndarray]
    summary: dict = field(default_factory=dict)


def fitted_target_cosine(
    chi_std: xr.DataArray, dh: xr.DataArray, class_dh: Mapping[str, float], class_coord: str
) -> dict[str, float]:
    """How much of the target survives the class extrapolation, on the probes.

    Compares the linear response nβ·χ̃·dh of the exact probe solution with that of the
    class-mean solution (each probe unit given its class's mean dh): their cosine and norm
    ratio over components. 1 and 1: the classes carry the whole target.
    """
    n_beta = float(dh.attrs["n_beta"])
    fitted = xr.DataArray(
        np.array([class_dh[str(c)] for c in dh[class_coord].values]),
        dims=("unit",),
        coords={"unit": dh.unit.values},
    )
    exact = predicted_response(chi_std, dh, n_beta).values
    approx = predicted_response(chi_std, fitted, n_beta).values
    norms = np.linalg.norm(exact) * np.linalg.norm(approx)
    return {
        "cosine": float(exact @ approx / norms) if norms > 0 else 0.0,
        "norm_ratio": float(np.linalg.norm(approx) / np.linalg.norm(exact))
        if np.linalg.norm(exact) > 0
        else 0.0,
    }


def mode_weights(
    chi: xr.DataArray,
    scores: Mapping[str, float],
    train_codes: np.ndarray,
    class_names: Sequence[str],
    n_beta: float,
    alpha: float = DEFAULT_ALPHA,
    rcond: float = 1e-3,
    ridge: float = 0.0,
    negative: NegativePolicy = "clip",
    class_coord: str = "pattern_class",
    mode: int | None = None,
) -> ModeWeights:
    """Induce and Repress weights for the training units (see the module docstring).

    Args:
        chi: ``(component, unit)`` as stored (no nβ factor), with the unit coordinate
            ``class_coord`` (the probes' pattern class).
        scores: later prefix-matching score per head, ``{"L1H3": 0.61, ...}`` (≥ 3 heads).
        train_codes: ``int [N, T − 1]`` class code of every training unit
            (:func:`unit_classes`); ``class_names[code]`` is the class name.
        class_names: names of the codes.
        n_beta: the nβ χ was estimated with.
        alpha: magnitude (see :data:`ALPHA_RULE`); 0 gives ρ ≡ 1.
        rcond, ridge: regularization of χ̃† (``solve_intervention``).
        negative: ``"clip"`` or ``"shift"`` (``weights_from_intervention``).
        class_coord: unit coordinate holding the probes' classes.
        mode: use this mode instead of the one best aligned with ``scores`` (the sign
            still follows ``scores``).

    Returns the weights and a summary (mode, alignments, sign, class weights, fit R², …).
    """
    chi = chi.transpose("component", "unit")
    if class_coord not in chi.coords:
        raise ValueError(f"χ has no unit coordinate {class_coord!r} to extrapolate by.")
    chi_std = standardize(chi, "component")
    modes = decompose(chi, "component")
    if mode is None:
        mode, alignment = aligned_mode(modes, scores)
    else:
        alignment = float(mode_alignment(modes, scores).sel(mode=mode))
    sign = induce_sign(modes, mode, scores)
    d_mu = mode_target(modes, mode, sign)  # Induce, standardized units
    dh = solve_intervention(chi_std, d_mu, n_beta, rcond=rcond, ridge=ridge)
    fit = extrapolate_by_class(dh, class_coord)
    class_dh = {str(c): float(v) for c, v in fit.class_means.items()}
    counts = np.bincount(train_codes.ravel(), minlength=len(class_names))
    fraction = {str(n): float(k / counts.sum()) for n, k in zip(class_names, counts, strict=True)}
    weights, conditions = {}, {}
    for condition, s in zip(CONDITIONS, (1.0, -1.0), strict=True):
        cdh = {c: s * v for c, v in class_dh.items()}
        weights[condition] = weights_for_units(cdh, train_codes, class_names, alpha, negative)
        table = class_weight_table(cdh, fraction, alpha, negative)
        target = {c: s * v for c, v in d_mu.items()}
        conditions[condition] = {
            "class_weights": table.weights,
            "fraction_clipped": table.fraction_clipped,
            "fraction_zero": table.fraction_zero,
            "score_weighted_change": score_weighted_change(target, scores),
        }
    alignments = mode_alignment(modes, scores)
    unseen = sorted(c for c, f in fraction.items() if f > 0 and c not in class_dh)
    summary = {
        "n_beta": float(n_beta),
        "alpha": float(alpha),
        "alpha_rule": ALPHA_RULE,
        "rcond": rcond,
        "ridge": ridge,
        "negative": negative,
        "mode": mode,
        "alignment": alignment,
        "alignments": {
            int(m): float(a) for m, a in zip(modes.mode.values, alignments.values, strict=True)
        },
        "explained_variance": [float(v) for v in modes["explained_variance"].values],
        "sign_induce": sign,
        "sign_rule": SIGN_RULE,
        "target_induce": d_mu,
        "head_scores": dict(scores),
        "kept_modes": int(dh.attrs["kept_modes"]),
        "class_dh_induce": class_dh,
        "probe_counts": {str(c): int(v) for c, v in fit.counts.items()},
        "train_class_fraction": {c: f for c, f in fraction.items() if f > 0},
        "classes_without_probes": unseen,
        "fit_r2": fit.r2,
        "target_retained": fitted_target_cosine(chi_std, dh, class_dh, class_coord),
        "conditions": conditions,
    }
    return ModeWeights(weights=weights, summary=summary)


def per_chain_class_dh(
    chi_chains: xr.DataArray,
    d_mu: Mapping[str, float],
    n_beta: float,
    rcond: float = 1e-3,
    class_coord: str = "pattern_class",
) -> dict[str, list[float]]:
    """Class means of dh recomputed from each chain's χ alone, same target dμ.

    ``chi_chains``: ``(component, chain, unit)`` (``chi_from_stats(..., per_chain=True)``),
    chains independent replicates. The spread over chains (SE = std/√chains) says whether
    the class weights' direction is resolved by the sampler or set by its noise.
    """
    out: dict[str, list[float]] = {}
    for chain in chi_chains.chain.values:
        one = standardize(chi_chains.sel(chain=chain).transpose("component", "unit"))
        fit = extrapolate_by_class(solve_intervention(one, d_mu, n_beta, rcond), class_coord)
        for c, v in fit.class_means.items():
            out.setdefault(str(c), []).append(float(v))
    return out
