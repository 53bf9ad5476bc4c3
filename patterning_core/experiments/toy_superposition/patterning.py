"""χ of the toy model's per-feature observables toward every training sample, and the
re-weightings built from it (method.md §1, §6).

Observables, per feature i:

- ``norm{i}``: the representation norm ‖W_i‖ (column i of W), averaged over the K seeds
  of the checkpoint; χ by one full SGLD run (``norm_susceptibilities``);
- ``loss{i}``: the localized loss of column i (SGLD moves only W[:, i] of every seed),
  χ by the project's two-run estimator (``loss_susceptibilities``).

Where χ is estimated: at an *early checkpoint* of baseline training (step ``chi_step`` of
K seeds), before the configuration is decided. A seed's configuration is set during the
first ~100 steps (the norm of a column at step 20 already predicts whether it survives);
χ at a trained configuration describes the local posterior of an outcome already reached,
not the competition between features that retraining from fresh initializations repeats.
The K seeds form one model whose loss is the sum of theirs (``model.seed_batched_loss``),
so χ of the seed-averaged norm is the average of the seeds' χ: the susceptibility of the
ensemble the retrained seeds are drawn from.

Re-weightings, all with mean 1 and compared at one **dose**, d(ρ) = mean_z |ρ_z − 1| (twice
the total-variation distance between the re-weighted and the uniform training
distribution):

- ``chi``: dh = (1/nβ)·χ†·dμ (``solve_intervention``; rows ``norm0..norm{n-1}``; dμ raises
  the target feature's norm by 1 and holds every other norm), ρ = 1 + α·dh/max|dh|
  (clipped at 0, renormalized: ``weights_from_intervention``);
- ``control``: the same ρ values randomly permuted across samples (same weight
  distribution, so the same dose, in a random direction of sample space);
- ``naive``: ρ ∝ 1 + c·[feature j active], c set so the dose equals the χ weights' dose.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from patterning_core.estimators.intervention import (
    solve_intervention,
    weighted_loss,
    weights_from_intervention,
)
from patterning_core.estimators.linear_response import ResponsePoint, linear_response_curve
from patterning_core.estimators.llc import estimate_llc
from patterning_core.estimators.statistics import wilson_interval
from patterning_core.estimators.susceptibility import chi_from_stats, sample_susceptibility_stats
from patterning_core.experiments.toy_superposition.model import (
    ToyConfig,
    importances,
    seed_batched_loss,
)
from patterning_core.sampling import DrawContext, SamplerConfig, full_run, run_sgld
from patterning_core.sampling.stats import pool_comoments

__all__ = [
    "DEFAULT_SAMPLER",
    "ChiResult",
    "chi_weights",
    "control_weights",
    "dose",
    "llc_of_seed",
    "loss_linear_response",
    "loss_susceptibilities",
    "naive_weights",
    "norm_linear_response",
    "norm_susceptibilities",
    "unit_direction",
    "wilson_interval",
]

DEFAULT_SAMPLER = SamplerConfig(
    step_size=1e-4,
    n_beta=100.0,
    localization=1000.0,
    num_chains=4,
    num_draws=300,
    num_burnin=100,
    batch_size=None,
    seed=0,
)


def _sample_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.to(torch.float64), -torch.ones(x.shape[0], dtype=torch.long)


def _params(W: Tensor, b: Tensor) -> dict[str, Tensor]:
    return {
        "W": torch.as_tensor(W, dtype=torch.float64),
        "b": torch.as_tensor(b, dtype=torch.float64),
    }


@dataclass(frozen=True)
class ChiResult:
    """χ of the norms: pooled ``chi`` (component, unit) and ``per_chain`` replicates
    (component, chain, unit) whose spread gives the standard error; ``norm_trace``
    (chain, draw, feature) for health."""

    chi: xr.DataArray
    per_chain: xr.DataArray
    norm_trace: np.ndarray


def norm_susceptibilities(
    cfg: ToyConfig, x: Tensor, W: Tensor, b: Tensor, sampler: SamplerConfig = DEFAULT_SAMPLER
) -> ChiResult:
    """χ_z(norm_i) = −Cov[(1/K)Σ_k‖W_k[:, i]‖, ℓ_z − L] over the localized posterior of the
    K seeds ``W [K, m, n], b [K, n]`` (one full run; no nβ factor)."""
    n, N = cfg.n_features, x.shape[0]
    loss_fn = seed_batched_loss(importances(cfg, torch.float64))
    params = _params(W, b)
    data = _sample_rows(x)
    probe = (
        torch.cat([torch.zeros(n, n, dtype=torch.float64), data[0]]),
        torch.cat([torch.arange(n), data[1]]),
    )
    draws: list[Tensor] = []

    def record(ctx: DrawContext) -> None:
        draws.append(ctx.evaluate(probe).double())

    run_sgld(loss_fn, params, data, [full_run(params)], sampler, on_draw=record, desc="χ norms")
    values = torch.stack(draws, dim=1).numpy()  # [chain, draw, n + N]
    phi, losses = values[..., :n], values[..., n:]
    centred_units = losses - losses.mean(axis=-1, keepdims=True)  # ℓ_z − L

    def neg_cov(p: np.ndarray, u: np.ndarray) -> np.ndarray:  # p [D, n], u [D, N]
        return -((p - p.mean(0)).T @ (u - u.mean(0))) / (p.shape[0] - 1)

    pooled = neg_cov(phi.reshape(-1, n), centred_units.reshape(-1, N))
    per_chain = np.stack([neg_cov(p, u) for p, u in zip(phi, centred_units, strict=True)], 1)
    comps = [f"norm{i}" for i in range(n)]
    attrs = {"n_beta": sampler.n_beta, "sampler_config": sampler.to_json()}
    chi = xr.DataArray(
        pooled,
        dims=("component", "unit"),
        coords={"component": comps, "unit": np.arange(N)},
        name="chi",
        attrs=attrs,
    )
    chains = xr.DataArray(
        per_chain,
        dims=("component", "chain", "unit"),
        coords={"component": comps, "chain": np.arange(per_chain.shape[1]), "unit": np.arange(N)},
        attrs=attrs,
    )
    return ChiResult(chi, chains, phi)


def column_components(cfg: ToyConfig, K: int) -> dict[str, dict[str, Tensor]]:
    """``loss{i}``: the masks of column i of W in every one of the K seeds."""
    out = {}
    for i in range(cfg.n_features):
        mask = torch.zeros(K, cfg.hidden, cfg.n_features, dtype=torch.bool)
        mask[:, :, i] = True
        out[f"loss{i}"] = {"W": mask}
    return out


def loss_susceptibilities(
    cfg: ToyConfig, x: Tensor, W: Tensor, b: Tensor, sampler: SamplerConfig = DEFAULT_SAMPLER
) -> xr.Dataset:
    """χ of the localized loss of each feature's column toward every training sample.

    One set of restricted runs (and the full run) through the project's estimator
    (``sample_susceptibility_stats``; φ on all samples, full batches) gives two readings:

    - ``two_run``: the project's estimator (method.md §2), which centres ℓ_z − L by the
      *full* run's means: E_C[φ(L − ℓ_z)] − E_C[φ]·E_full[L − ℓ_z];
    - ``restricted``: −Cov_C[φ, ℓ_z − L] under the restricted run alone (pooled over
      chains), the susceptibility of the restricted posterior, which the fluctuation–
      dissipation identity ties to the response of that posterior (``loss_linear_response``).

    They differ by E_C[φ]·(E_full[ℓ_z − L] − E_C[ℓ_z − L]); at trained toy models that term
    flips the sign of the two-run value on some features (see the report).
    """
    loss_fn = seed_batched_loss(importances(cfg, torch.float64))
    data = _sample_rows(x)
    comps = column_components(cfg, W.shape[0])
    stats = sample_susceptibility_stats(loss_fn, _params(W, b), data, data, comps, sampler)
    two_run = chi_from_stats(stats)
    count, _mean_phi, m2, _mean_x, co = pool_comoments(
        stats["count"].values,
        stats["phi_mean"].values,
        stats["phi_m2"].values,
        stats["probe_mean"].values,
        stats["probe_comoment"].values,
        axis=1,
    )
    # L on the fixed batch (all samples) is φ + const, so Cov_C[φ, L] = Var_C[φ]
    restricted = -(co - m2[:, None]) / count[:, None]
    return xr.Dataset(
        {
            "two_run": two_run,
            "restricted": (("component", "unit"), restricted),
        },
        attrs={"n_beta": sampler.n_beta, "sampler_config": sampler.to_json()},
    )


# ----------------------------------------------------------------------------- weights


def dose(rho: np.ndarray) -> float:
    """mean_z |ρ_z − 1| for ρ of mean 1 (twice the total-variation distance)."""
    rho = np.asarray(rho, dtype=np.float64)
    return float(np.abs(rho / rho.mean() - 1.0).mean())


def chi_weights(
    chi: xr.DataArray, target: dict[str, float], n_beta: float, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(dh, ρ)``: dh = (1/nβ) χ† dμ (components of χ missing from ``target`` held at 0),
    ρ = 1 + α·dh/max|dh|, clipped at 0 and rescaled to mean 1."""
    dh = solve_intervention(chi, target, n_beta, rcond=1e-6).values
    return dh, weights_from_intervention(dh, alpha, negative="clip")


def control_weights(rho: np.ndarray, seed: int = 0) -> np.ndarray:
    """ρ randomly permuted across samples: same values, hence same dose and distribution."""
    return np.asarray(rho)[np.random.default_rng(seed).permutation(len(rho))]


def naive_weights(active: np.ndarray, target_dose: float) -> np.ndarray:
    """ρ ∝ 1 + c·a with a = [feature active], mean 1, and mean|ρ − 1| = ``target_dose``.

    With f = mean(a): ρ = (1 + c a)/(1 + c f) and mean|ρ − 1| = 2 f (1 − f) c / (1 + c f),
    so c = d / (2 f (1 − f) − d f), which needs d < 2(1 − f).
    """
    a = np.asarray(active, dtype=np.float64)
    f = a.mean()
    if not 0 < f < 1:
        raise ValueError("the feature must be active in some but not all samples")
    if not 0 <= target_dose < 2 * (1 - f):
        raise ValueError(f"dose {target_dose} unreachable by up-weighting (max {2 * (1 - f)})")
    c = target_dose / (2 * f * (1 - f) - target_dose * f)
    return (1 + c * a) / (1 + c * f)


# ----------------------------------------------------------------------------- linear response


def unit_direction(direction: np.ndarray) -> np.ndarray:
    """The re-weighting direction centred (Σ = 0: a pure re-distribution of weight) and
    scaled to max |·| = 1, so that ρ = 1 + α·direction changes no weight by more than α."""
    centred = np.asarray(direction, dtype=np.float64) - np.mean(direction)
    return centred / np.abs(centred).max()


def norm_linear_response(
    cfg: ToyConfig,
    x: Tensor,
    W: Tensor,
    b: Tensor,
    chi_row: np.ndarray,
    direction: np.ndarray,
    feature: int,
    alphas: Sequence[float],
    sampler: SamplerConfig = DEFAULT_SAMPLER,
) -> list[ResponsePoint]:
    """Predicted nβ·Σ_z χ_z (ρ_z − 1)/N against the measured change of ⟨norm_feature⟩ when
    SGLD samples the posterior of the ρ-weighted loss, ρ = 1 + α·direction/max|direction|
    (direction centred; weights must stay ≥ 0). Every α uses the same random streams as
    the unweighted run (common random numbers), so the noise cancels in the difference."""
    n, N = cfg.n_features, x.shape[0]
    weighted = weighted_loss(seed_batched_loss(importances(cfg, torch.float64)))

    params = _params(W, b)
    xs, kind = _sample_rows(x)
    probe = (torch.ones(1, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64))
    probe = (*probe, torch.tensor([feature]))
    direction = unit_direction(direction)

    def mean_norm(rho: np.ndarray) -> np.ndarray:
        sums = np.zeros(sampler.num_chains)

        def record(ctx: DrawContext) -> None:
            sums[:] += ctx.evaluate(probe)[:, 0].double().numpy()

        w = torch.as_tensor(rho, dtype=torch.float64)
        run_sgld(weighted, params, (w, xs, kind), [full_run(params)], sampler, on_draw=record)
        return sums / sampler.num_draws

    reference = mean_norm(np.ones(N))
    points = []
    for alpha in alphas:
        rho = 1.0 + alpha * direction
        if rho.min() < 0:
            raise ValueError(f"alpha={alpha} gives negative weights; use smaller alphas")
        diff = mean_norm(rho) - reference
        predicted = sampler.n_beta * float(np.sum(np.asarray(chi_row) * (rho - 1.0)) / N)
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        points.append(ResponsePoint(float(alpha), predicted, float(diff.mean()), se))
    return points


def loss_linear_response(
    cfg: ToyConfig,
    x: Tensor,
    W: Tensor,
    b: Tensor,
    chi_row: np.ndarray,
    direction: np.ndarray,
    feature: int,
    alphas: Sequence[float],
    sampler: SamplerConfig = DEFAULT_SAMPLER,
) -> list[ResponsePoint]:
    """The same check for the localized loss of the feature's column, through the project's
    ``linear_response_curve`` (direction scaled to max |·| = 1); ``chi_row``: the
    ``restricted`` reading of ``loss_susceptibilities``."""
    direction = unit_direction(direction)
    comp = column_components(cfg, W.shape[0])[f"loss{feature}"]
    loss_fn = seed_batched_loss(importances(cfg, torch.float64))
    return linear_response_curve(
        loss_fn, _params(W, b), _sample_rows(x), comp, chi_row, direction, alphas, sampler
    )


# ----------------------------------------------------------------------------- LLC


LLC_SAMPLER = SamplerConfig(
    step_size=1e-4,
    n_beta=100.0,
    localization=100.0,
    num_chains=4,
    num_draws=400,
    num_burnin=200,
    batch_size=None,
    seed=0,
)


def llc_of_seed(
    cfg: ToyConfig, x: Tensor, W: Tensor, b: Tensor, sampler: SamplerConfig = LLC_SAMPLER
) -> tuple[float, float, float]:
    """λ̂ of one trained model ``W [m, n], b [n]``: ``(mean, std over chains, R̂)``."""
    loss_fn = seed_batched_loss(importances(cfg, torch.float64))
    params = _params(torch.as_tensor(W)[None], torch.as_tensor(b)[None])
    result = estimate_llc(loss_fn, params, _sample_rows(x), sampler, progress=False)
    return result.mean, result.std, result.rhat


# ----------------------------------------------------------------------------- summaries


def condition_summary(reached: Sequence[bool]) -> dict[str, float | int | list[float]]:
    """``{"reached", "n", "fraction", "wilson95"}`` of one condition's seeds."""
    k, n = int(sum(bool(r) for r in reached)), len(reached)
    return {
        "reached": k,
        "n": n,
        "fraction": k / n if n else 0.0,
        "wilson95": list(wilson_interval(k, n, z=1.96)),
    }


def dose_to_reach(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """The smallest dose at which the fraction reaches ``level``, linearly interpolated
    between measured ``(dose, fraction)`` points (the first point is the baseline at dose
    0); None when no measured dose reaches it."""
    pts = sorted(points)
    for (d0, f0), (d1, f1) in itertools.pairwise(pts):
        if f1 >= level > f0:
            return d0 + (level - f0) * (d1 - d0) / (f1 - f0)
    if pts and pts[0][1] >= level:
        return pts[0][0]
    return None
