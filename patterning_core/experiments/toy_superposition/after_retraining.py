"""χ measured again after retraining: did the re-weighting move the model as χ predicted?

The χ seeds (the K initializations whose step-``chi_step`` checkpoint gave χ) are trained
again under each condition's weights ρ (same initializations, same data, same order), and
at two points of that retraining, the χ checkpoint step and the end of training, SGLD
re-estimates χ of the norms (``norm_susceptibilities``, unweighted loss, the same sampler
and sampler seed as the original χ, so the chains share their random numbers across
conditions). From each of those runs:

- the posterior mean ⟨norm_i⟩ of every feature (what the observable reads at the retrained
  model), per chain;
- χ itself, ``[feature, unit]``, in the same convention as the original: χ_z(norm_i) =
  −Cov[norm_i, ℓ_z − L], no nβ factor, so nβ·Σ_z χ_z (ρ_z − 1)/N is the linear response of
  ⟨norm_i⟩ to the weights ρ.

What χ predicted (method.md §6): the χ weights solve nβ·χ·dh = dμ with dμ = +1 on the
target's norm and 0 on the others, so the target's norm rises and the others are held;
the control (the same weights permuted) has no such direction. Retraining for ``step``
updates amplifies the posterior-level response by far (the sign is what transfers, the
size is set by α), so the check is on the direction and on the control: the target's norm
rises under the χ weights at both points, by many standard errors, while the control moves
it by less than a quarter of that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patterning_core.experiments.toy_superposition.model import ToyConfig, train_seeds
from patterning_core.experiments.toy_superposition.patterning import (
    DEFAULT_SAMPLER,
    ChiResult,
    norm_susceptibilities,
)
from patterning_core.sampling import SamplerConfig

__all__ = ["CONTROL_SHARE", "MIN_Z", "after_retraining_rows", "after_targets", "retrained_chi"]

MIN_Z = 3.0  # the target's rise must exceed this many standard errors (over seeds)
CONTROL_SHARE = 0.25  # the control's |change| must stay below this share of χ's rise


def retrained_chi(
    cfg: ToyConfig,
    x: Tensor,
    seeds: Sequence[int],
    weights: np.ndarray | None,
    step: int,
    sampler: SamplerConfig = DEFAULT_SAMPLER,
) -> tuple[ChiResult, np.ndarray]:
    """Train ``seeds`` for ``step`` updates under weights ρ ``[N]`` (None: uniform) and
    re-estimate χ of the norms there; returns ``(χ result, ‖W_i‖ per seed [K, n])``."""
    rho = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    W, b = train_seeds(cfg, x, seeds, rho, steps=step)
    return norm_susceptibilities(cfg, x, W, b, sampler), W.norm(dim=1).numpy()


def after_retraining_rows(
    chi_before: np.ndarray,
    n_beta: float,
    weights: Mapping[str, np.ndarray],
    measured: Mapping[tuple[str, int], Mapping[str, Any]],
    target: int,
) -> list[dict[str, Any]]:
    """One row per (condition, step) of ``measured``, changes taken against the
    ``"baseline"`` condition at the same step.

    Args:
        chi_before: χ of the norms at the original checkpoint ``[feature, unit]``.
        weights: ρ ``[N]`` (mean 1) of every condition but the baseline.
        measured: ``{(condition, step): {"posterior": [chain, feature] posterior means,
            "seed_norms": [K, feature] ‖W_i‖ of each retrained seed, "chi": [feature,
            unit] χ re-estimated there}}``, with a ``"baseline"`` entry at every step.

    Row keys: ``condition``, ``step``, ``posterior`` (⟨norm_target⟩), ``change`` (its
    change against the baseline, mean over chains of the paired per-chain difference),
    ``change_se_chains`` (SGLD noise), ``change_se_seeds`` (seed-to-seed spread of the
    paired change of ‖W_target‖ over the K seeds), ``change_others`` (the other features'
    posterior changes), ``predicted_linear`` (nβ·χ_before·(ρ − 1)/N for the target: the
    predicted direction), ``response_after`` (the same with the re-estimated χ),
    ``chi_row_cosine`` (cosine of the re-estimated target row of χ with the original).
    """
    rows = []
    t = target
    before = np.asarray(chi_before, dtype=np.float64)
    for (name, step), m in measured.items():
        base = measured[("baseline", step)]
        post = np.asarray(m["posterior"], dtype=np.float64)
        diff = post - np.asarray(base["posterior"], dtype=np.float64)  # [chain, feature]
        seed_diff = np.asarray(m["seed_norms"])[:, t] - np.asarray(base["seed_norms"])[:, t]
        after = np.asarray(m["chi"], dtype=np.float64)
        rho = np.ones(before.shape[1]) if name == "baseline" else np.asarray(weights[name])
        n = len(rho)
        cos = float(after[t] @ before[t] / (np.linalg.norm(after[t]) * np.linalg.norm(before[t])))
        rows.append(
            {
                "condition": name,
                "step": int(step),
                "posterior": float(post[:, t].mean()),
                "change": float(diff[:, t].mean()),
                "change_se_chains": float(diff[:, t].std(ddof=1) / np.sqrt(len(diff))),
                "change_se_seeds": float(seed_diff.std(ddof=1) / np.sqrt(len(seed_diff))),
                "change_others": {
                    str(i): float(diff[:, i].mean()) for i in range(diff.shape[1]) if i != t
                },
                "predicted_linear": n_beta * float(before[t] @ (rho - 1.0)) / n,
                "response_after": n_beta * float(after[t] @ (rho - 1.0)) / n,
                "chi_row_cosine": cos,
            }
        )
    return rows


def after_targets(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The check: at every step, χ's change of the target norm is positive (the predicted
    direction) by more than ``MIN_Z`` standard errors (the larger of the two SEs), and the
    control's |change| is below ``CONTROL_SHARE`` of it."""
    by = {(r["condition"], r["step"]): r for r in rows}
    steps = sorted({r["step"] for r in rows})
    per_step = []
    for s in steps:
        chi, ctl = by[("chi", s)], by[("control", s)]
        se = max(chi["change_se_chains"], chi["change_se_seeds"])
        per_step.append(
            {
                "step": s,
                "chi_change": chi["change"],
                "chi_z": chi["change"] / se if se > 0 else float("inf"),
                "predicted_sign": float(np.sign(chi["predicted_linear"])),
                "control_change": ctl["change"],
                "control_share": abs(ctl["change"]) / chi["change"]
                if chi["change"] > 0
                else float("inf"),
            }
        )
    met = all(
        p["predicted_sign"] > 0
        and p["chi_change"] > 0
        and p["chi_z"] > MIN_Z
        and p["control_share"] < CONTROL_SHARE
        for p in per_step
    )
    return {"per_step": per_step, "met": bool(met)}
