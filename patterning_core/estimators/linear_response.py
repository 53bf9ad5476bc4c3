"""Linear-response check: does re-weighting the data move ⟨φ⟩ as nβ·χ·dh predicts?

For weights ρ (mean 1) on the n training units, the data distribution changes by
dh_z = (ρ_z − 1)/n, and linear response predicts d⟨φ_C⟩ = nβ · Σ_z χ_z dh_z. We measure
the change by sampling the component's localized posterior twice, with the plain and the
re-weighted loss, using the *same* random streams (common random numbers), so the noise
largely cancels in the difference. Growing the re-weighting shows where linearity breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from patterning_core.estimators.intervention import weighted_loss, with_weights
from patterning_core.sampling.sgld import LossFn, Run, SamplerConfig, run_sgld, validate_masks


@dataclass(frozen=True)
class ResponsePoint:
    """One re-weighting strength: predicted and measured change of ⟨φ⟩ (± SE over chains)."""

    alpha: float
    predicted: float
    measured: float
    measured_se: float


def _mean_phi_per_chain(
    plain_loss: LossFn,
    params: Mapping[str, Tensor],
    data: tuple,
    weights: Tensor,
    masks: Mapping[str, Tensor],
    config: SamplerConfig,
) -> np.ndarray:
    """Per-chain mean over the draws of φ = L(w) − const, with L the *plain* loss on all
    data, while SGLD samples the posterior of the ρ-weighted loss."""
    sums = np.zeros(config.num_chains)
    plain_batch = (torch.ones_like(weights), *data)

    def record(ctx) -> None:
        losses = ctx.evaluate(plain_batch)
        sums[:] += losses.reshape(losses.shape[0], -1).double().mean(dim=1).cpu().numpy()

    run_sgld(
        weighted_loss(plain_loss),
        params,
        with_weights(data, weights),
        [Run("response", masks)],
        config,
        on_draw=record,
    )
    return sums / config.num_draws


def linear_response_curve(
    plain_loss: LossFn,
    params: Mapping[str, Tensor],
    data: Sequence[Tensor],
    component: Mapping[str, Tensor],
    chi_row: np.ndarray,
    direction: np.ndarray,
    alphas: Sequence[float],
    config: SamplerConfig,
) -> list[ResponsePoint]:
    """Predicted against measured change of ⟨φ_C⟩ for ρ = 1 + α·direction.

    Args:
        plain_loss: per-unit losses of the model, ``[B]`` or ``[B, T]`` (per token).
        params: the checkpoint w*.
        data: the n training examples (tuple of tensors); their units are the loss units.
        component: ``{param: mask}`` of C (the run moves only these weights).
        chi_row: χ of C for every training unit, shaped like the loss of all data (``[n]``
            or ``[n, T]``; no nβ factor).
        direction: re-weighting direction, same shape (its mean is removed).
        alphas: strengths; weights are ρ = 1 + α·direction, which must stay ≥ 0.
        config: sampler settings (the same seed, so the same random streams, for every α).

    The prediction is nβ·Σ_z χ_z·(ρ_z − 1)/N over the N units.
    """
    data = tuple(data)
    masks = validate_masks(params, component, where="component")
    direction = np.asarray(direction, dtype=np.float64)
    chi_row = np.asarray(chi_row, dtype=np.float64)
    with torch.no_grad():
        unit_shape = tuple(plain_loss(dict(params), tuple(t[:1] for t in data)).shape[1:])
    units = (data[0].shape[0], *unit_shape)
    if chi_row.shape != units or direction.shape != units:
        raise ValueError(
            f"chi_row {chi_row.shape} and direction {direction.shape} must both have the "
            f"shape of the loss units of the data, {units}."
        )
    direction = direction - direction.mean()
    like = {"dtype": data[0].dtype if data[0].is_floating_point() else torch.float32}
    ones = torch.ones(direction.shape, device=data[0].device, **like)
    base = _mean_phi_per_chain(plain_loss, params, data, ones, masks, config)
    points = []
    for alpha in alphas:
        rho = 1.0 + alpha * direction
        if rho.min() < 0:
            raise ValueError(f"alpha={alpha} gives negative weights; use smaller alphas.")
        weights = torch.as_tensor(rho, device=data[0].device, **like)
        diff = _mean_phi_per_chain(plain_loss, params, data, weights, masks, config) - base
        predicted = config.n_beta * float(np.sum(chi_row * (rho - 1.0)) / rho.size)
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        points.append(ResponsePoint(float(alpha), predicted, float(diff.mean()), se))
    return points
