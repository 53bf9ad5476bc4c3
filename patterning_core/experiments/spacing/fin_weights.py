"""Training weights that act on the spacing fin: χ-derived suppression and its same-dose
control (``fin`` defines the fin, its mode and its metric).

**χ suppress.** On the per-component standardized χ̃ ``(component, unit)`` (rows centred
and scaled, ``decomposition.standardize``: the δ-localization scales each row by an unknown
factor), the fin mode k has χ̃ v_k = σ_k u_k. The target dμ = −s·σ_k·u_k, with s the sign of
the fin's ρ (run position against v_k), gives (``intervention.solve_intervention``)

    dh = (1/nβ)·χ̃†·dμ = −s·v_k / nβ,

the re-weighting that moves weight away from the units at the fin's deep end (large s·v_k:
spaces deep in their runs) toward its other end; nβ (the store's ``n_beta``) enters only
here. dh is known on the probe units; every training unit gets the mean dh of its *fin
class* over the probes (:func:`fin_classes`: a space at run position 1, 2, …, capped, or of
unknown position; otherwise its pattern class), and ρ = 1 + α·dh/max|dh| (clipped at 0,
mean 1: ``intervention.weights_from_intervention``). R² of the class fit says how much of
the probe dh the classes keep.

**Control at the same dose.** Every whitespace unit (target token whitespace only) is
scaled by one factor c and the rest kept, so that the whitespace units' share of the total
weight equals their share under the χ weights: the same change of whitespace's total
weight, without χ's choice of which whitespace units.

**Read on part of the probes, applied to part of the training text.** With ``probe_units``
χ is that of a subset of the probe units (e.g. the outline sequences' units: the fin mode
of a restricted reading, ``fin_chains``), and only their classes enter the fit; with
``train_rows`` only the units of those training rows are re-weighted (dh = 0 elsewhere), and
the control scales only their whitespace units: the same dose, in the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.data.token_classes import PRIMARY_CLASSES, PatternClasses, classify
from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.intervention import (
    ClassExtrapolation,
    extrapolate_by_class,
    solve_intervention,
    weights_from_intervention,
)
from patterning_core.experiments.spacing.fin import run_positions

__all__ = [
    "MAX_POSITION",
    "FinWeights",
    "class_weights",
    "control_like",
    "fin_classes",
    "fin_weights",
    "mode_solution",
    "train_fin_labels",
    "weights_summary",
]

MAX_POSITION = 12  # run positions beyond this share one class


def fin_classes(
    tokens: Tensor, strings: Sequence[str], classes: PatternClasses | None = None
) -> np.ndarray:
    """Class label of each unit ``[B, T − 1]`` (str): ``"space@k"`` for a space at run
    position k (k ≥ ``MAX_POSITION`` as ``"space@12+"``), ``"space@?"`` for a space whose run
    reaches the start of the sequence, else the unit's primary pattern class. ``classes``:
    the units' pattern classes if already computed (``classify(...).for_units()``)."""
    classes = classes if classes is not None else classify(tokens, strings).for_units()
    primary = classes.primary().numpy()
    labels = np.array(PRIMARY_CLASSES, dtype=object)[primary]
    positions = run_positions(tokens, strings)
    is_space = np.array([s == " " for s in strings])[tokens[:, 1:].numpy()]
    labels[is_space] = "space@?"
    known = np.isfinite(positions)
    capped = np.minimum(np.nan_to_num(positions, nan=0), MAX_POSITION).astype(int)
    for k in range(1, MAX_POSITION + 1):
        name = f"space@{k}+" if k == MAX_POSITION else f"space@{k}"
        labels[known & (capped == k)] = name
    return labels


@dataclass
class FinWeights:
    """``weights``: ρ ``float32 [N, T − 1]`` (mean 1) for ``"chi_suppress"`` and
    ``"control_dose"``; ``summary``: JSON-able numbers for the report."""

    weights: dict[str, np.ndarray]
    summary: dict


def control_like(rho: np.ndarray, whitespace: np.ndarray) -> np.ndarray:
    """ρ_c = c on whitespace units, 1 elsewhere, rescaled to mean 1, with c such that the
    whitespace share of Σρ_c equals that of Σρ (see the module docstring)."""
    rho = np.asarray(rho, dtype=np.float64)
    ws = np.asarray(whitespace, dtype=bool)
    f = ws.mean()
    share = rho[ws].sum() / rho.sum()
    if not 0 < f < 1:
        raise ValueError("the training units must hold whitespace and other targets")
    c = share * (1 - f) / (f * (1 - share))
    out = np.where(ws, c, 1.0)
    return out / out.mean()


def mode_solution(
    chi: xr.DataArray, n_beta: float, mode: int, sign: float, probe_classes: np.ndarray
) -> tuple[xr.DataArray, ClassExtrapolation, float]:
    """The intervention along one mode of the standardized χ̃ and its class fit.

    dh = (1/nβ)·χ̃†·dμ for dμ = sign·σ_k·u_k (``intervention.solve_intervention``; a left
    singular vector, so dh = sign·v_k/nβ on the probe units), fitted by the probe units'
    classes ``probe_classes`` ``[unit]`` (``intervention.extrapolate_by_class``). ``chi``:
    ``(component, unit)`` as stored (no nβ factor). Returns ``(dh, fit, σ_k)``."""
    chi = chi.transpose("component", "unit")
    modes = decompose(chi, "component")
    u = modes["component_loading"].sel(mode=mode).values
    sigma = float(modes["singular_value"].sel(mode=mode))
    dh = solve_intervention(standardize(chi, "component"), sign * sigma * u, n_beta, rcond=1e-6)
    fit = extrapolate_by_class(dh.assign_coords(fin_class=("unit", probe_classes)), "fin_class")
    return dh, fit, sigma


def train_fin_labels(train_tokens: Tensor, strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each training unit's fin class (:func:`fin_classes`) and whether its target is
    whitespace only: ``(str [N, T − 1], bool [N, T − 1])`` for ``train_tokens`` ``[N, T]``."""
    kinds = classify(train_tokens, strings).for_units()  # once: it scans every context
    return fin_classes(train_tokens, strings, kinds), kinds.whitespace.numpy()


def class_weights(
    class_means: dict[str, float],
    train_labels: tuple[np.ndarray, np.ndarray],
    alpha: float = 1.0,
    train_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The χ weights and their control from the probe dh's class means.

    Every training unit gets the mean dh of its fin class (0 for a class no probe unit has,
    and outside ``train_rows``), ρ = 1 + α·dh/max|dh| clipped at 0 and rescaled to mean 1
    (``intervention.weights_from_intervention``); the control scales the whitespace units
    of ``train_rows`` to the same share (:func:`control_like`). ``class_means``: fin class →
    mean dh over the probe units (``FinWeights.summary["class_dh"]``, so published weights
    can be rebuilt from their record); ``train_labels``: :func:`train_fin_labels`.
    Returns ``(ρ, ρ_control)``, float64 ``[N, T − 1]``.
    """
    train_classes, ws = train_labels
    names, index = np.unique(train_classes, return_inverse=True)
    per_class = np.array([class_means.get(c, 0.0) for c in names])
    dh_train = per_class[index].reshape(train_classes.shape)
    if train_rows is not None:
        train_rows = np.asarray(train_rows, dtype=bool)
        if train_rows.shape != (train_classes.shape[0],) or not train_rows.any():
            raise ValueError(
                f"train_rows must be a boolean mask over the {train_classes.shape[0]} training "
                "rows that keeps at least one."
            )
        dh_train = np.where(train_rows[:, None], dh_train, 0.0)
        ws = ws & train_rows[:, None]
    rho = weights_from_intervention(dh_train, alpha, negative="clip")
    return rho, control_like(rho, ws)


def fin_weights(
    chi: xr.DataArray,
    n_beta: float,
    fin: dict,
    probe_tokens: Tensor,
    train_tokens: Tensor,
    strings: Sequence[str],
    alpha: float = 1.0,
    *,
    probe_units: np.ndarray | None = None,
    train_rows: np.ndarray | None = None,
    train_labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> FinWeights:
    """χ-suppress and control weights for every training unit (module docstring).

    ``chi``: ``(component, unit)`` at the checkpoint, as stored (no nβ factor), units in the
    order of ``probe_tokens`` ``[P, T]`` flattened (with ``probe_units``, a boolean mask
    over those ``P·(T − 1)`` units, only the units it keeps, in order); ``fin``:
    :func:`fin.fin_metric` of that χ (its ``mode`` and the sign of its ``rho``);
    ``train_tokens`` ``[N, T]``; ``train_rows``: boolean ``[N]``, the rows re-weighted
    (None: all); ``train_labels``: ``train_fin_labels(train_tokens, strings)`` computed
    beforehand (it scans every training context; it does not depend on χ).
    """
    k, s = int(fin["mode"]), float(np.sign(fin["rho"]))
    probe_classes = fin_classes(probe_tokens, strings).ravel()
    if probe_units is not None:
        probe_units = np.asarray(probe_units, dtype=bool)
        if probe_units.shape != probe_classes.shape or probe_units.sum() != chi.sizes["unit"]:
            raise ValueError(
                f"probe_units must mask the {probe_classes.size} probe units down to χ's "
                f"{chi.sizes['unit']} units, got {int(probe_units.sum())} of {probe_units.size}."
            )
        probe_classes = probe_classes[probe_units]
    _, fit, _ = mode_solution(chi, n_beta, k, -s, probe_classes)
    train_classes, ws = train_labels or train_fin_labels(train_tokens, strings)
    expected = (train_tokens.shape[0], train_tokens.shape[1] - 1)
    if train_classes.shape != expected or ws.shape != expected:
        raise ValueError(f"train_labels must both be {list(expected)} (one per training unit).")
    rho, control = class_weights(fit.class_means, (train_classes, ws), alpha, train_rows)
    summary = {
        "mode": k,
        "rho_sign": s,
        "fit_r2": fit.r2,
        "class_dh": fit.class_means,
        "class_counts": fit.counts,
        **weights_summary(rho, control, (train_classes, ws), train_rows),
    }
    weights = {"chi_suppress": rho.astype(np.float32), "control_dose": control.astype(np.float32)}
    return FinWeights(weights, summary)


def weights_summary(
    rho: np.ndarray,
    control: np.ndarray,
    train_labels: tuple[np.ndarray, np.ndarray],
    train_rows: np.ndarray | None = None,
) -> dict:
    """The doses of χ weights ``rho`` and their ``control`` (both ``[N, T − 1]``, mean 1), as
    JSON-able numbers: each fin class's mean weight and the whitespace share of the total
    weight over the re-weighted units (``train_rows``; None: all), mean |ρ − 1| over all
    units, the number of zero weights, the largest weight, and ``decile_ratio``: the mean
    weight of the most up-weighted tenth of the re-weighted units over that of the most
    down-weighted tenth (the dose as a weight ratio). ``train_labels``: :func:`train_fin_labels`.
    """
    train_classes, ws = train_labels
    reweighted = np.ones(rho.shape, dtype=bool)
    if train_rows is not None:
        reweighted &= np.asarray(train_rows, dtype=bool)[:, None]
    ws = ws & reweighted
    ordered = np.sort(rho[reweighted].ravel())
    tenth = max(1, ordered.size // 10)
    return {
        "class_weight": {
            c: float(rho[(train_classes == c) & reweighted].mean())
            for c in np.unique(train_classes[reweighted])
        },
        "whitespace_share": {
            "uniform": float(ws.mean()),
            "chi_suppress": float(rho[ws].sum() / rho.sum()),
            "control_dose": float(control[ws].sum() / control.sum()),
        },
        "dose": {
            "chi_suppress": float(np.abs(rho - 1).mean()),
            "control_dose": float(np.abs(control - 1).mean()),
        },
        "zero_weights": int((rho == 0).sum()),
        "max_weight": float(rho.max()),
        "decile_ratio": float(ordered[-tenth:].mean() / max(ordered[:tenth].mean(), 1e-12)),
    }
