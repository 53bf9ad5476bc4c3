"""From a target change of structure to data weights (method.md §6).

Fundamental equation: the minimum-norm data intervention that changes the structural
coordinates by dμ_target is

    dh = (1/nβ) · χ† · dμ_target          (χ: component × unit, no nβ factor)

so that, to first order, dμ = nβ · χ · dh. The pseudo-inverse is regularized: singular
values below ``rcond · σ_max`` are dropped, and/or a ridge λ replaces 1/σ by σ/(σ² + λ).

Training weights: ρ_z = 1 + α · dh_z / max|dh| — α is the largest relative change of any
unit's weight (linear response gives the direction; the useful magnitude lies outside the
linear regime and is a tuned hyperparameter). Negative weights need a rule (``floor`` = 0
by default; a positive floor keeps every unit in the data):

- ``"clip"``: ρ ← max(ρ, floor), then rescaled so the mean weight stays 1;
- ``"shift"``: ρ ← ρ − (min(ρ) − floor) when min(ρ) < floor, then rescaled to mean 1
  (keeps the differences between units, moves the mass elsewhere).

When each entry of dh stands for several data units (a group of strings), ``counts`` makes
the mean that is rescaled to 1 the mean over those units.

The weighted loss: ``weighted_loss(loss_fn)`` on batches ``(ρ, *data)`` (``with_weights``
builds them) multiplies each unit's loss by its weight, so the mean over all units is
Σρℓ/Σρ when ρ has mean 1.

Units that were not probes (most training tokens) get a weight predicted from their
pattern class: the mean dh of the probe units of that class (``extrapolate_by_class``),
with the fraction of dh's variance that the class means explain reported as R².
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor

NegativePolicy = Literal["clip", "shift"]


def solve_intervention(
    chi: xr.DataArray,
    d_mu: Mapping[str, float] | np.ndarray,
    n_beta: float,
    rcond: float = 1e-3,
    ridge: float = 0.0,
) -> xr.DataArray:
    """dh (unit) = (1/nβ) χ† dμ, with small singular values truncated or damped.

    Args:
        chi: ``(component, unit)``, no nβ factor (as stored).
        d_mu: target change per component, a mapping ``{component: value}`` (missing
            components: 0) or an array in ``chi.component`` order.
        n_beta: the nβ χ was estimated with.
        rcond: drop singular values below ``rcond · σ_max``.
        ridge: Tikhonov damping λ ≥ 0 (σ⁻¹ → σ / (σ² + λ)).
    """
    names = [str(c) for c in chi.component.values]
    if isinstance(d_mu, Mapping):
        unknown = sorted(set(d_mu) - set(names))
        if unknown:
            raise ValueError(f"unknown component(s) {unknown} in d_mu; χ has {names}.")
        target = np.array([float(d_mu.get(c, 0.0)) for c in names])
    else:
        target = np.asarray(d_mu, dtype=np.float64)
        if target.shape != (len(names),):
            raise ValueError(f"d_mu must have one value per component ({len(names)}).")
    matrix = chi.transpose("component", "unit").values.astype(np.float64)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    keep = s >= rcond * s.max() if s.size else s.astype(bool)
    inverse = (
        np.where(keep, s / (s**2 + ridge), 0.0)
        if ridge > 0
        else np.where(keep, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    )
    dh = (vt.T * inverse) @ (u.T @ target) / n_beta
    unit_coords = {k: v for k, v in chi.coords.items() if v.dims == ("unit",)}
    return xr.DataArray(
        dh,
        dims=("unit",),
        coords=unit_coords,
        name="dh",
        attrs={"n_beta": n_beta, "rcond": rcond, "ridge": ridge, "kept_modes": int(keep.sum())},
    )


def predicted_response(chi: xr.DataArray, dh: xr.DataArray, n_beta: float) -> xr.DataArray:
    """Linear response dμ = nβ · χ · dh, per component."""
    return n_beta * (chi * dh).sum("unit")


def raw_weights(dh: np.ndarray | Tensor, alpha: float) -> np.ndarray:
    """ρ = 1 + α · dh / max|dh| before any rule for negatives (α is the largest relative
    change of any unit's weight; dh ≡ 0 gives ρ ≡ 1)."""
    dh = np.asarray(dh, dtype=np.float64)
    scale = np.abs(dh).max() if dh.size else 0.0
    return 1.0 + alpha * (dh / scale if scale > 0 else dh)


def weights_from_intervention(
    dh: np.ndarray | Tensor,
    alpha: float,
    negative: NegativePolicy = "clip",
    *,
    floor: float = 0.0,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """The one rule from an intervention dh to training weights.

    ρ = 1 + α · dh / max|dh| (:func:`raw_weights`), kept ≥ ``floor`` by ``negative``
    (``"clip"``: ρ ← max(ρ, floor); ``"shift"``: ρ ← ρ − (min ρ − floor) when
    min ρ < floor), then rescaled to mean 1.

    Args:
        dh: the intervention, one entry per unit (or per group of units, see ``counts``).
        alpha: the largest relative change of any weight before the negative rule.
        negative: ``"clip"`` or ``"shift"``.
        floor: the smallest weight allowed, ≥ 0 (0: weights are only kept non-negative).
        counts: data units each entry stands for (e.g. the training units of each pattern
            class); the mean rescaled to 1 is then the mean over those units,
            Σ counts·ρ / Σ counts (None: one unit each).
    """
    if not floor >= 0:
        raise ValueError(f"floor must be ≥ 0, got {floor}.")
    rho = raw_weights(dh, alpha)
    if negative == "clip":
        rho = np.maximum(rho, floor)
    elif negative == "shift":
        rho = rho - min(rho.min() - floor, 0.0)
    else:
        raise ValueError(f"negative weights policy must be 'clip' or 'shift', not {negative!r}.")
    if counts is None:
        mean = rho.mean()
    else:
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != rho.shape or bool((counts < 0).any()) or counts.sum() <= 0:
            raise ValueError(f"counts must be {rho.shape}, non-negative and not all zero.")
        mean = float((counts / counts.sum()) @ rho)
    if mean <= 0:
        raise ValueError("every weight is zero after the negative-weight rule; lower alpha.")
    return rho / mean


@dataclass(frozen=True)
class ClassExtrapolation:
    """Mean dh per pattern class of the probe units, and how well it fits them.

    ``r2`` = 1 − Σ(dh − class mean)² / Σ(dh − mean)² over the probe units.
    """

    class_means: dict[str, float]
    r2: float
    counts: dict[str, int]

    def predict(self, classes: Sequence[str]) -> np.ndarray:
        """dh for units of the given classes (a class never seen among probes: 0)."""
        return np.array([self.class_means.get(str(c), 0.0) for c in classes])


def extrapolate_by_class(
    dh: xr.DataArray, class_coord: str = "pattern_class"
) -> ClassExtrapolation:
    """Fit dh of the probe units by their pattern-class means."""
    classes = np.array([str(c) for c in dh[class_coord].values])
    values = dh.values.astype(np.float64)
    means, counts = {}, {}
    fitted = np.empty_like(values)
    for c in np.unique(classes):
        mask = classes == c
        means[c] = float(values[mask].mean())
        counts[c] = int(mask.sum())
        fitted[mask] = means[c]
    total = ((values - values.mean()) ** 2).sum()
    r2 = 1.0 - ((values - fitted) ** 2).sum() / total if total > 0 else 1.0
    return ClassExtrapolation(means, float(r2), counts)


def weighted_loss(loss_fn: Callable) -> Callable:
    """The per-unit loss ρ_z·ℓ_z, on batches ``(rho, *data)`` (:func:`with_weights`).

    With ρ of mean 1 over the n training units, the mean over all units is
    L_ρ = Σρℓ/Σρ, the loss a ρ-weighted model is trained on (and whose posterior SGLD then
    samples); with ρ ≡ 1 it is the plain loss. The weights travel with the data, so every
    minibatch carries its own units' ρ.
    """

    def weighted(params: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        rho, *rest = batch
        return loss_fn(params, tuple(rest)) * rho

    return weighted


def with_weights(data: tuple[Tensor, ...], weights: Tensor | np.ndarray | None) -> tuple:
    """``(ρ, *data)`` for :func:`weighted_loss`: ``weights`` (one per unit along dim 0 of
    ``data``, or ``[n, T]`` per token; their dtype kept) rescaled to mean 1; None gives
    float32 ones."""
    like = data[0]
    n = like.shape[0]
    if weights is None:
        rho = torch.ones(n, dtype=torch.float32, device=like.device)
    else:
        rho = torch.as_tensor(weights, device=like.device)
        if rho.shape[0] != n:
            raise ValueError(f"weights have {rho.shape[0]} rows for {n} data units.")
    return (rho / rho.mean(), *data)


def mode_target(modes: xr.Dataset, mode: int, sign: float = 1.0) -> dict[str, float]:
    """dμ along a mode's component loadings: ``sign · u_mode`` (Induce +1, Repress −1)."""
    loading = modes["component_loading"].sel(mode=mode)
    return {
        str(c): sign * float(v)
        for c, v in zip(loading.component.values, loading.values, strict=True)
    }


def as_tensor(values: np.ndarray, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)
