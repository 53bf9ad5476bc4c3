"""Linear-response check: does re-weighting the data move ⟨φ⟩ as nβ·χ·dh predicts?

:func:`two_run_linear_check` asks it of the estimator patterning inverts (the two-run χ of
a component, whose centring means come from the full run) against the component's
restricted run re-sampled with the weights.

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
from tqdm.auto import tqdm

from patterning_core.estimators.intervention import weighted_loss, with_weights
from patterning_core.estimators.susceptibility import (
    chi_from_stats,
    restricted_chi_from_stats,
    sample_susceptibility_stats,
)
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
    phi_batch: tuple | None = None,
) -> np.ndarray:
    """Per-chain mean over the draws of φ = L(w) − const, with L the *plain* mean loss on
    ``phi_batch`` (None: all data), while SGLD samples the posterior of the ρ-weighted
    loss."""
    sums = np.zeros(config.num_chains)
    on = data if phi_batch is None else phi_batch
    # Unit weights of one: shaped like the weights (per example or per token), on φ's batch.
    ones = torch.ones((on[0].shape[0], *weights.shape[1:]), dtype=weights.dtype)
    plain_batch = (ones.to(on[0].device), *on)

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
    phi_batch: Sequence[Tensor] | None = None,
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
        phi_batch: the units φ = L_fix(w) − L_fix(w*) is measured on (None: all of
            ``data``); pass the batch χ's φ was measured on to check that χ.

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
    fixed = None if phi_batch is None else tuple(phi_batch)
    base = _mean_phi_per_chain(plain_loss, params, data, ones, masks, config, fixed)
    points = []
    for alpha in alphas:
        rho = 1.0 + alpha * direction
        if rho.min() < 0:
            raise ValueError(f"alpha={alpha} gives negative weights; use smaller alphas.")
        weights = torch.as_tensor(rho, device=data[0].device, **like)
        diff = _mean_phi_per_chain(plain_loss, params, data, weights, masks, config, fixed) - base
        predicted = config.n_beta * float(np.sum(chi_row * (rho - 1.0)) / rho.size)
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        points.append(ResponsePoint(float(alpha), predicted, float(diff.mean()), se))
    return points


def two_run_linear_check(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Sequence[Tensor],
    components: Mapping[str, Mapping[str, Tensor]],
    direction: np.ndarray,
    config: SamplerConfig,
    fractions: Sequence[float] = (0.1, 0.25),
    phi_batch: Sequence[Tensor] | None = None,
    progress: bool = True,
) -> list[dict]:
    """The linear response of the estimator that patterning inverts: the two-run χ
    (``estimators.susceptibility``), estimated with every data unit as a probe, against the
    measured change of each component's localized loss ⟨φ_C⟩ when its restricted run
    samples the re-weighted posterior ρ = 1 + α·direction (:func:`linear_response_curve`:
    common random numbers, φ on the same fixed batch).

    ``direction`` (shaped like the loss units of ``data``; its mean is removed) must not be
    built from this χ estimate: a direction taken from the noisy row itself correlates with
    its noise and inflates the prediction by the noise variance. Use e.g. the weights a
    patterning solve gave, or an exact χ. α runs over ``fractions`` of the largest α that
    keeps every weight ≥ 0, so the check is done where first order should hold.
    ``phi_batch`` defaults to the first ``batch_size`` units of ``data`` (all of them
    without minibatches). ``progress``: progress bars (the χ sampling's, then one step per
    component's re-weighted runs).

    Returns one row per (component, α): ``component``, ``alpha``, ``fraction``,
    ``predicted`` (nβ·Σ χ_z (ρ_z − 1)/N with the two-run χ), ``predicted_restricted``
    (the same with the restricted run's own χ, ``restricted_chi_from_stats``), each with
    its ``_se`` from the spread of per-chain χ, ``measured`` and ``measured_se`` (over
    chains), ``ratio`` and ``ratio_restricted`` (measured / predicted).
    """
    data = tuple(data)
    if phi_batch is None:
        size = data[0].shape[0] if config.batch_size is None else config.batch_size
        phi_batch = tuple(t[:size] for t in data)
    phi_batch = tuple(phi_batch)
    stats = sample_susceptibility_stats(
        loss_fn, params, data, data, components, config, phi_batch=phi_batch, progress=progress
    )
    estimates = {
        "": (chi_from_stats(stats), chi_from_stats(stats, per_chain=True)),
        "_restricted": (
            restricted_chi_from_stats(stats),
            restricted_chi_from_stats(stats, per_chain=True),
        ),
    }
    with torch.no_grad():
        unit_shape = tuple(loss_fn(dict(params), tuple(t[:1] for t in data)).shape[1:])
    shape = (data[0].shape[0], *unit_shape)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape != shape:
        raise ValueError(f"direction {direction.shape} must have the loss units' shape {shape}.")
    centred = direction - direction.mean()
    if not centred.min() < 0:
        raise ValueError("direction is constant over the units: there is nothing to re-weight.")
    alphas = [f / float(-centred.min()) for f in fractions]
    rows = []
    for name, masks in tqdm(
        components.items(),
        desc="linear check: re-weighted runs per component",
        disable=not progress,
    ):
        row = estimates[""][0].sel(component=name).values.astype(np.float64).reshape(shape)
        points = linear_response_curve(
            loss_fn, params, data, masks, row, centred, alphas, config, phi_batch
        )
        for fraction, point in zip(fractions, points, strict=True):
            out = {"component": name, "alpha": point.alpha, "fraction": float(fraction)}
            dh = point.alpha * centred.ravel() / centred.size
            for suffix, (pooled, chains) in estimates.items():
                per_chain = config.n_beta * chains.sel(component=name).values @ dh
                out["predicted" + suffix] = config.n_beta * float(
                    pooled.sel(component=name).values @ dh
                )
                out["predicted" + suffix + "_se"] = float(
                    per_chain.std(ddof=1) / np.sqrt(per_chain.size)
                )
            out["measured"], out["measured_se"] = point.measured, point.measured_se
            for suffix in estimates:
                out["ratio" + suffix] = _ratio(point.measured, out["predicted" + suffix])
            rows.append(out)
    return rows


def _ratio(measured: float, predicted: float) -> float:
    return measured / predicted if predicted else float("nan")
