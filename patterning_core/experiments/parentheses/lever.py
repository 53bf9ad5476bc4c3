"""The lever of the algorithm-selection demonstration, validated at fixed solutions.

The claim to test (method.md §7, §8 "linear response"): at a trained solution w*, the
localized tempered posterior p(w) ∝ exp(−nβ·L_n(w) − γ/2·‖w − w*‖²) responds to re-weighting
the training strings by ρ (mean 1) to first order as fluctuation–dissipation says. This
module measures that response and compares it with the prediction, before any retraining.

**Observable (fixed).** φ(w) = L_n(w), the *unweighted* mean loss over all n training
strings, so that λ = nβ·(⟨φ⟩ − L_n(w*)) is the LLC. Under re-weighting only the posterior
changes; φ, w* and L_n(w*) stay fixed, so the change of the LLC is Δλ = nβ·(⟨L_n⟩_ρ − ⟨L_n⟩)
where ⟨·⟩_ρ is the posterior of the ρ-weighted loss L_ρ = (1/n)·Σ_z ρ_z ℓ_z. (The LLC *of*
L_ρ, nβ·(⟨L_ρ⟩_ρ − L_ρ(w*)), is a different quantity; it is not what is predicted here.)

**Per-string susceptibility** (shape ``[n]``, one per training string z, no nβ factor):

    χ_z = −Cov[L_n(w), ℓ_z(w) − L_n(w)]

over the unweighted posterior. Σ_z χ_z = 0 exactly. Sign: χ_z > 0 means up-weighting string
z raises ⟨L_n⟩, i.e. raises the LLC. Since L_ρ = L_n + (1/n)·Σ_z (ρ_z − 1)·(ℓ_z − L_n) for
mean-1 ρ, to first order

    Δ⟨L_n⟩ = nβ · (1/n)·Σ_z χ_z (ρ_z − 1),      Δλ = nβ² · (1/n)·Σ_z χ_z (ρ_z − 1)

(one nβ from the posterior's exponent, one from λ's definition).

**The direction.** χ_diff = mean χ over Nested references − mean over Equal-Count
references (``[n]``); the minimum-norm per-string change that lowers λ(Nested) −
λ(Equal-Count) is dh = −χ_diff/‖χ_diff‖ (mean 0, since Σχ = 0); the weights are
ρ = 1 + α·dh/max|dh| (so α is the largest relative change of any string's weight; ρ ≥ 1 − α,
and ρ has mean 1).

**Independent halves (no winner's curse).** χ estimated from the same draws that chose
the direction is biased along it (the noise of χ̂ enters squared). So each solution's
unweighted run has two disjoint sets of chains: the *direction* chains estimate χ for dh,
the *check* chains estimate the χ that the prediction uses and the baseline ⟨L_n⟩. The
ρ-weighted re-sampling runs only the check chains, with the same run name, chain ids and
sampler settings, so each chain sees the same noise and minibatches as its unweighted
twin (common random numbers): the measured Δλ is a paired difference per chain.

Everything here is plain computation (no Prefect, no Dask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patterning_core.estimators.intervention import weighted_loss, with_weights
from patterning_core.sampling.diagnostics import split_rhat
from patterning_core.sampling.sgld import (
    DrawContext,
    LossFn,
    SamplerConfig,
    as_data_tuple,
    evaluate_in_chunks,
    full_run,
    run_sgld,
)

RUN_NAME = "lever"


@dataclass(frozen=True)
class LeverConfig:
    """Settings of the lever's validation.

    Attributes:
        sampler: SGLD settings (``num_chains`` is ignored: the chains are
            ``direction_chains`` then ``check_chains``).
        direction_chains: chains whose χ gives the direction dh (ids 0..d−1).
        check_chains: chains of the check (ids d..d+c−1): the prediction's χ, the baseline
            ⟨L_n⟩, and the re-weighted runs.
        alphas: the α of the check (largest relative change of a string's weight).
        temperature_factor: nβ' / nβ of the temperature check (``temperature_check``).
        chunk: strings evaluated per call at a draw.
    """

    sampler: SamplerConfig
    direction_chains: int = 8
    check_chains: int = 16
    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    temperature_factor: float = 1.05
    chunk: int = 1024

    def __post_init__(self) -> None:
        if self.direction_chains < 2 or self.check_chains < 2:
            raise ValueError("need at least 2 direction chains and 2 check chains.")
        if not self.alphas or any(not 0 < a < 1 for a in self.alphas):
            raise ValueError(f"every α must lie in (0, 1), got {self.alphas}.")

    @property
    def direction_ids(self) -> list[int]:
        return list(range(self.direction_chains))

    @property
    def check_ids(self) -> list[int]:
        return list(range(self.direction_chains, self.direction_chains + self.check_chains))

    def replace(self, **changes: Any) -> LeverConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "alphas": list(self.alphas)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LeverConfig:
        values = dict(values)
        return cls(
            sampler=SamplerConfig.from_dict(values.pop("sampler")),
            alphas=tuple(values.pop("alphas")),
            **values,
        )


def string_losses_at_draws(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    sgld_data: Sequence[Tensor],
    eval_data: Sequence[Tensor],
    config: SamplerConfig,
    chain_ids: Sequence[int],
    *,
    chunk: int = 1024,
    run_name: str = RUN_NAME,
) -> np.ndarray:
    """``[chains, draws, n]`` float64 per-string losses ℓ_z of ``eval_data`` at every draw.

    SGLD runs on ``sgld_data`` (with ``loss_fn``; e.g. ρ-weighted data for
    ``weighted_loss``); at each draw every chain evaluates ``loss_fn`` on all of
    ``eval_data`` (e.g. the same strings with ρ ≡ 1). ``chain_ids`` key the random streams.
    """
    eval_data = as_data_tuple(eval_data, what="eval_data")
    n = eval_data[0].shape[0]
    out = np.zeros((len(chain_ids), config.num_draws, n))

    def record(ctx: DrawContext) -> None:
        for i in range(0, n, chunk):
            part = ctx.evaluate(tuple(t[i : i + chunk] for t in eval_data))
            out[:, ctx.draw, i : i + chunk] = part.double().numpy()

    with torch.enable_grad():
        run_sgld(
            loss_fn,
            params,
            sgld_data,
            [full_run(params, name=run_name)],
            config.replace(num_chains=len(chain_ids)),
            on_draw=record,
            chain_ids=list(chain_ids),
            progress=False,
        )
    return out


def string_chi(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """χ_z = −Cov[L_n, ℓ_z − L_n] from ``losses [chains, draws, n]``, L_n = mean over z.

    Returns ``(pooled [n], per_chain [chains, n])``: pooled over all chains and draws
    (covariance about the grand mean, ddof 1), and each chain alone. No nβ factor.
    """
    l_n = losses.mean(axis=2)  # [C, D]
    x = losses - l_n[:, :, None]
    flat_phi, flat_x = l_n.reshape(-1), x.reshape(-1, x.shape[2])
    pooled = -((flat_phi - flat_phi.mean()) @ (flat_x - flat_x.mean(axis=0))) / (flat_phi.size - 1)
    dphi = l_n - l_n.mean(axis=1, keepdims=True)
    dx = x - x.mean(axis=1, keepdims=True)
    per_chain = -np.einsum("cd,cdn->cn", dphi, dx) / (losses.shape[1] - 1)
    return pooled, per_chain


def trace_health(trace: np.ndarray, n_beta: float) -> dict[str, float]:
    """Health of a ``[chains, draws]`` L_n trace: split-R̂, and the drift nβ·(mean of the
    second half − mean of the first half of the draws) with its SE over chains (≈ 0 when
    the burn-in was long enough)."""
    half = trace.shape[1] // 2
    per_chain = n_beta * (trace[:, half:].mean(axis=1) - trace[:, :half].mean(axis=1))
    return {
        "rhat": float(split_rhat(trace)),
        "drift": float(per_chain.mean()),
        "drift_se": float(per_chain.std(ddof=1) / np.sqrt(per_chain.size)),
    }


def baseline_run(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Sequence[Tensor],
    cfg: LeverConfig,
) -> dict[str, Any]:
    """The unweighted run of one solution (all chains), reduced to what the lever needs.

    Returns (lists are JSON-ready): ``chi_direction [n]`` (direction chains),
    ``chi_check [n]`` and ``chi_check_per_chain [check_chains, n]`` (check chains),
    ``init_loss`` L_n(w*), ``mean_loss`` ⟨L_n⟩ and ``chain_mean_loss [check_chains]`` over the
    check chains, ``llc`` nβ·(⟨L_n⟩ − L_n(w*)) and ``llc_se`` (check chains),
    ``llc_direction`` (direction chains), ``var_loss`` Var(L_n) over the check chains' draws,
    ``fluctuation_ratio`` = nβ²·Var(L_n)/λ (for a Gibbs posterior of order 1: exactly 1 for a
    regular model, where nβ·(L_n − L_n(w*)) is Gamma(λ, 1)-distributed; far above 1, the
    sampler's fluctuations are not the posterior's), and the check trace's ``rhat``,
    ``drift``, ``drift_se``.
    """
    plain = with_weights(tuple(data), None)
    loss = weighted_loss(loss_fn)
    ids = cfg.direction_ids + cfg.check_ids
    losses = string_losses_at_draws(loss, params, plain, plain, cfg.sampler, ids, chunk=cfg.chunk)
    d = cfg.direction_chains
    chi_dir, _ = string_chi(losses[:d])
    chi_chk, chi_chk_chain = string_chi(losses[d:])
    with torch.no_grad():
        init = float(evaluate_in_chunks(loss, params, plain).double().mean())
    nb = cfg.sampler.n_beta
    trace = losses[d:].mean(axis=2)  # [C, D]
    chain_llc = nb * (trace.mean(axis=1) - init)
    return {
        "chi_direction": chi_dir.tolist(),
        "chi_check": chi_chk.tolist(),
        "chi_check_per_chain": chi_chk_chain.tolist(),
        "init_loss": init,
        "mean_loss": float(trace.mean()),
        "chain_mean_loss": trace.mean(axis=1).tolist(),
        "llc": float(chain_llc.mean()),
        "llc_se": float(chain_llc.std(ddof=1) / np.sqrt(chain_llc.size)),
        "llc_direction": float(nb * (losses[:d].mean() - init)),
        "var_loss": float(trace.reshape(-1).var(ddof=1)),
        "fluctuation_ratio": float(nb**2 * trace.reshape(-1).var(ddof=1) / chain_llc.mean()),
        **trace_health(trace, nb),
    }


def lever_weights(
    chi_nested: np.ndarray, chi_equal: np.ndarray, alpha: float
) -> dict[str, np.ndarray]:
    """Per-string weights that lower λ(Nested) − λ(Equal-Count) (module doc).

    Args:
        chi_nested: ``[S_N, n]`` χ_z of the Nested references (direction chains).
        chi_equal: ``[S_E, n]`` χ_z of the Equal-Count references.
        alpha: largest relative change of a string's weight, in (0, 1).

    Returns ``chi_diff [n]``, ``dh [n]`` (unit norm, = −χ_diff/‖χ_diff‖, mean ≈ 0) and
    ``weights [n]``: ρ = 1 + α·dh/max|dh|, rescaled to mean 1 (a no-op up to rounding).
    """
    chi_diff = np.mean(chi_nested, axis=0) - np.mean(chi_equal, axis=0)
    dh = -chi_diff / np.linalg.norm(chi_diff)
    rho = 1.0 + alpha * dh / np.abs(dh).max()
    return {"chi_diff": chi_diff, "dh": dh, "weights": rho / rho.mean()}


def predicted_dllc(chi: np.ndarray, weights: np.ndarray, n_beta: float) -> float:
    """First-order Δλ = nβ²·(1/n)·Σ_z χ_z (ρ_z − 1) of the fixed observable λ (module doc);
    ``chi [n]`` or ``[..., n]`` (then one prediction per leading index)."""
    return n_beta**2 * np.mean(np.asarray(chi) * (np.asarray(weights) - 1.0), axis=-1)


def reweighted_run(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Sequence[Tensor],
    weights: np.ndarray,
    cfg: LeverConfig,
    baseline: Mapping[str, Any],
) -> dict[str, Any]:
    """Re-sample the check chains under the ρ-weighted loss (common random numbers with the
    unweighted run) and compare the measured Δλ with the prediction.

    Returns ``measured`` = nβ·(⟨L_n⟩_ρ − ⟨L_n⟩) (check chains, both runs), ``measured_se``
    (SE over chains of the per-chain paired difference), ``predicted`` = nβ²·(1/n)·Σχ_z(ρ_z−1)
    with the check chains' χ, ``predicted_se`` (spread of the per-chain predictions / √C),
    ``perturbation_sd``: nβ·SD of (L_ρ − L_n) over the re-weighted draws (within chains),
    the size of the log-density change; first order needs it well below 1. And the
    weighted trace's ``rhat``, ``drift``, ``drift_se``.
    """
    plain = with_weights(tuple(data), None)
    weighted = with_weights(tuple(data), torch.as_tensor(np.asarray(weights), dtype=torch.float32))
    losses = string_losses_at_draws(
        weighted_loss(loss_fn),
        params,
        weighted,
        plain,
        cfg.sampler,
        cfg.check_ids,
        chunk=cfg.chunk,
    )
    nb = cfg.sampler.n_beta
    trace = losses.mean(axis=2)
    delta = np.einsum("cdn,n->cd", losses, np.asarray(weights) - 1.0) / losses.shape[2]
    paired = nb * (trace.mean(axis=1) - np.asarray(baseline["chain_mean_loss"]))
    per_chain_pred = predicted_dllc(np.asarray(baseline["chi_check_per_chain"]), weights, nb)
    return {
        "measured": float(paired.mean()),
        "measured_se": float(paired.std(ddof=1) / np.sqrt(paired.size)),
        "predicted": float(predicted_dllc(np.asarray(baseline["chi_check"]), weights, nb)),
        "predicted_se": float(per_chain_pred.std(ddof=1) / np.sqrt(per_chain_pred.size)),
        "perturbation_sd": float(nb * np.sqrt(delta.var(axis=1, ddof=1).mean())),
        **trace_health(trace, nb),
    }


def temperature_check(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Sequence[Tensor],
    cfg: LeverConfig,
    baseline: Mapping[str, Any],
    factor: float | None = None,
) -> dict[str, Any]:
    """Fluctuation–dissipation for nβ itself, a check of the sampler that no data direction
    enters: re-sample the check chains at nβ' = factor·nβ (common random numbers) and compare
    the measured Δ(nβ·⟨L_n⟩) with its first-order prediction −nβ·(nβ' − nβ)·Var(L_n) from the
    unweighted draws (``baseline["var_loss"]``). Raising nβ is re-weighting every string by
    the same factor, so if this fails the per-string prediction cannot hold either. Also
    ``lambda_fixed``: the change λ·(1/factor − 1) if λ did not depend on nβ.

    Returns ``measured``, ``measured_se`` (over chains, paired), ``predicted``,
    ``lambda_fixed``, ``factor``.
    """
    factor = cfg.temperature_factor if factor is None else factor
    plain = with_weights(tuple(data), None)
    nb = cfg.sampler.n_beta
    losses = string_losses_at_draws(
        weighted_loss(loss_fn),
        params,
        plain,
        plain,
        cfg.sampler.replace(n_beta=nb * factor),
        cfg.check_ids,
        chunk=cfg.chunk,
    )
    paired = nb * (losses.mean(axis=2).mean(axis=1) - np.asarray(baseline["chain_mean_loss"]))
    return {
        "factor": factor,
        "measured": float(paired.mean()),
        "measured_se": float(paired.std(ddof=1) / np.sqrt(paired.size)),
        "predicted": float(-nb * (factor - 1) * nb * baseline["var_loss"]),
        "lambda_fixed": float(baseline["llc"] * (1 / factor - 1)),
    }
