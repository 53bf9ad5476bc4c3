"""Algorithm selection in parentheses balancing: LLCs, group susceptibilities, patterning.

The demonstration of method.md §7. Train many seeds of ``paren_model`` on strings where the
Nested and Equal-Count rules agree; each seed's out-of-distribution (OOD) answer tells which
rule it learned. Then:

1. **LLC per solution** (method.md §4): λ̂(w*) = nβ·(E[L_n(w)] − L_n(w*)) under the localized
   posterior at each trained solution w* (``llc.estimate_llc``).
2. **Group susceptibilities of the LLC.** Observable φ(w) = L_n(w) (so λ = nβ·(⟨φ⟩ − L_n(w*))).
   Data units are groups g of training strings (``parentheses.group_units``). By
   fluctuation–dissipation, the susceptibility of ⟨φ⟩ to the mixture (1−h)·q + h·q_g is

       χ_g = −Cov[L_n(w), L_g(w) − L_n(w)]           (no nβ factor),

   L_g the mean loss over group g, the covariance over the localized posterior at w*
   (SGLD draws, ``run_sgld``). χ_g > 0: up-weighting group g raises ⟨L_n⟩, i.e. raises the
   LLC. χ_g is the mean of the per-string χ_z over the group. Re-weighting each string of
   group g by ρ_g = 1 + δ_g (weights of mean 1 over strings, Σ_g π_g δ_g = 0, π_g = n_g/n)
   turns L_n into L_ρ = L_n + Σ_g π_g δ_g (L_g − L_n): the mixture with h_g = π_g·δ_g. So,
   to first order,

       d⟨L_n⟩ = nβ · Σ_g π_g χ_g δ_g,     dλ = nβ² · Σ_g π_g χ_g δ_g

   (w* held fixed; the second nβ is the one in λ's definition). Identity: Σ_g π_g χ_g = 0
   (re-weighting every string equally changes nothing).
3. **The LLC-targeted intervention** (method.md §6–7): χ_diff = mean χ over Nested
   solutions − mean χ over Equal-Count solutions; the minimum-norm direction that lowers
   λ(Nested) − λ(Equal-Count) per unit norm of the per-string weight change is
   δ_g ∝ dh = −χ_diff/‖χ_diff‖ (minimizing Σ_z δ_z² subject to a given Σ_g π_g χ_g δ_g makes
   δ_z proportional to its group's χ; computed with ``intervention.solve_intervention`` on
   the one-row χ_diff with target −1, then normalized). Weights ρ_g = max(1 + α·dh_g/max|dh|,
   floor), so α is the largest relative change of any group's weight and no group is
   dropped entirely; ρ is then rescaled to mean 1 over the training strings (the training
   loss Σρℓ/Σρ does not depend on the scale): ``intervention.weights_from_intervention``
   with the ``clip`` rule, the floor, and the group sizes as counts.
4. Retrain the same seeds (same initialization and data order) with ρ and compare the
   fraction that learns Nested.

A seed is classified by its OOD "balanced" rate r (fraction of OOD strings it calls
balanced): Nested if r ≤ threshold, Equal-Count if r ≥ 1 − threshold, mixed otherwise
(default threshold 0.2). Seeds that do not fit the training set (accuracy < ``min_train_acc``)
are classified ``unfit``.

This module holds the science: statistics, the rule of a seed, group χ and the intervention.
``steps`` holds the units of work (train one seed, analyze one solution, ...) and the
plain-Python driver ``run_experiment`` composed of them; ``report`` renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from patterning_core.estimators.intervention import solve_intervention, weights_from_intervention
from patterning_core.estimators.llc import LLCResult
from patterning_core.estimators.statistics import wilson_interval
from patterning_core.sampling.sgld import (
    DrawContext,
    LossFn,
    SamplerConfig,
    as_data_tuple,
    evaluate_in_chunks,
    full_run,
    run_sgld,
)
from patterning_core.sampling.stats import CoMomentAccumulator, pool_comoments

NESTED, EQUAL_COUNT, MIXED, UNFIT = "nested", "equal_count", "mixed", "unfit"


# --- statistics -----------------------------------------------------------------------------


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (NaN SE with fewer than two values; NaN mean when empty)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def classify_rule(
    ood_balanced_rate: float, train_acc: float, threshold: float = 0.2, min_train_acc: float = 0.99
) -> str:
    """``nested`` if rate ≤ threshold, ``equal_count`` if rate ≥ 1 − threshold, else ``mixed``;
    ``unfit`` when the training accuracy is below ``min_train_acc``."""
    if train_acc < min_train_acc:
        return UNFIT
    if ood_balanced_rate <= threshold:
        return NESTED
    if ood_balanced_rate >= 1 - threshold:
        return EQUAL_COUNT
    return MIXED


# --- group susceptibilities ------------------------------------------------------------------


@dataclass(frozen=True)
class GroupChi:
    """Result of ``group_susceptibilities``.

    Attributes:
        chi: ``[G]`` χ_g = −Cov[L_n, L_g − L_n], all chains and draws pooled (no nβ).
        se: ``[G]`` standard error: std over chains of the per-chain χ_g, / √chains.
        per_chain: ``[C, G]`` χ_g from each chain alone.
        llc: nβ·(E[L_n] − L_n(w*)) from the same draws (L_n from the probes, see
            ``group_susceptibilities``; the training loss when every unit is a probe).
        init_loss: L_n(w*).
        loss_trace: ``[C, draws]`` L_n at each draw.
        group_sizes: ``[G]`` strings per group.
    """

    chi: np.ndarray
    se: np.ndarray
    per_chain: np.ndarray
    llc: float
    init_loss: float
    loss_trace: np.ndarray
    group_sizes: np.ndarray


def group_matrix(group_index: np.ndarray, n_groups: int) -> Tensor:
    """``[n, G]`` float64 averaging matrix: column g is 1/n_g on group g (L_g = ℓ @ M)."""
    index = torch.as_tensor(np.asarray(group_index), dtype=torch.long)
    onehot = torch.nn.functional.one_hot(index, n_groups).to(torch.float64)
    sizes = onehot.sum(dim=0)
    if bool((sizes == 0).any()):
        raise ValueError("every group needs at least one unit.")
    return onehot / sizes


def _evaluate_all(ctx: DrawContext, data: tuple[Tensor, ...], chunk: int) -> Tensor:
    """``[lanes, n]`` float64 per-unit losses of every lane on all of ``data``."""
    n = data[0].shape[0]
    parts = [
        ctx.evaluate(tuple(t[i : i + chunk] for t in data)).double() for i in range(0, n, chunk)
    ]
    units = torch.cat(parts, dim=1)
    if units.dim() != 2:
        raise ValueError("per-example losses [B] are needed here, got per-token losses.")
    return units


def stratified_probes(group_index: np.ndarray, per_group: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_group`` units of each group (all units with None),
    drawn without replacement by a seeded generator."""
    group_index = np.asarray(group_index)
    if per_group is None:
        return np.arange(group_index.size)
    rng = np.random.default_rng([seed, 11])
    picks = []
    for g in np.unique(group_index):
        members = np.flatnonzero(group_index == g)
        picks.append(rng.choice(members, size=min(per_group, members.size), replace=False))
    return np.sort(np.concatenate(picks))


def group_susceptibilities(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Tensor | Sequence[Tensor],
    group_index: np.ndarray,
    config: SamplerConfig,
    *,
    probe_index: np.ndarray | None = None,
    probe_data: Sequence[Tensor] | None = None,
    run_name: str = "group-chi",
    chunk: int = 4096,
    progress: bool | None = False,
) -> GroupChi:
    """χ_g = −Cov[L_n(w), L_g(w) − L_n(w)] over the localized posterior at ``params``.

    One full-weight SGLD run on all of ``data`` (``config``; minibatches drive the updates).
    At every draw each chain evaluates the per-unit losses ℓ_z (``loss_fn`` returns ``[B]``)
    of the probe units (``probe_index``; default all n units), giving the group means L_g
    over the probes of each group and L_n = Σ_g π_g·L_g with π_g = n_g/n the group's share
    of all units (so with every unit a probe, L_n is exactly the training loss; with a
    stratified subset, L_g and L_n are unbiased subset estimates, fixed across draws).
    Co-moments are accumulated per chain (Welford, float64) and pooled across chains exactly
    (Chan): χ_g = −(pooled co-moment)/(draws − 1). The posterior mean responds to
    re-weighting the strings of group g by ρ_g = 1 + δ_g as d⟨L_n⟩ = nβ·Σ_g π_g·χ_g·δ_g
    (module doc); Σ_g π_g χ_g = 0 by construction.

    Args:
        loss_fn: per-unit losses ``[B]``.
        params: the solution w*.
        data: the n training units.
        group_index: ``[n]`` group of each unit, values 0..G−1 (every group non-empty).
        config: sampler settings.
        probe_index: units evaluated at the draws (every group needs one); None: all.
        probe_data: what is evaluated for those units, if not ``data[probe_index]`` (e.g.
            the units with weight 1 when ``data`` carries weights, see
            ``intervention.with_weights``).
        run_name: keys the chains' random streams (same name and config: same noise).
        chunk: units evaluated per call at a draw.
    """
    data = as_data_tuple(data)
    params = {k: v.detach() for k, v in params.items()}
    n = data[0].shape[0]
    group_index = np.asarray(group_index)
    if group_index.shape != (n,):
        raise ValueError(f"group_index must be [n] = [{n}], got {group_index.shape}.")
    n_groups = int(group_index.max()) + 1
    shares = torch.as_tensor(np.bincount(group_index, minlength=n_groups) / n)
    probe_index = np.arange(n) if probe_index is None else np.asarray(probe_index)
    probes = (
        tuple(t[torch.as_tensor(probe_index)] for t in data)
        if probe_data is None
        else as_data_tuple(probe_data, what="probe_data")
    )
    if probes[0].shape[0] != probe_index.size:
        raise ValueError("probe_data needs one row per probe unit.")
    avg = group_matrix(group_index[probe_index], n_groups)  # [probes, G]
    with torch.no_grad():
        at_star = evaluate_in_chunks(loss_fn, params, probes).double()
    init_loss = float((at_star @ avg) @ shares)
    acc = CoMomentAccumulator(config.num_chains, n_groups)
    trace = np.zeros((config.num_chains, config.num_draws))

    def record(ctx: DrawContext) -> None:
        l_g = _evaluate_all(ctx, probes, chunk) @ avg  # [chains, G]
        l_n = l_g @ shares
        acc.update(l_n, l_g - l_n[:, None])
        trace[:, ctx.draw] = l_n.numpy()

    with torch.enable_grad():
        run_sgld(
            loss_fn,
            params,
            data,
            [full_run(params, name=run_name)],
            config,
            on_draw=record,
            progress=progress,
            desc="group χ",
        )
    st = acc.numpy()
    per_chain = -st["comoment"] / (st["count"][:, None] - 1)
    count, _, _, _, comoment = pool_comoments(
        st["count"], st["mean_phi"], st["m2_phi"], st["mean_x"], st["comoment"], axis=0
    )
    chains = per_chain.shape[0]
    se = (
        per_chain.std(axis=0, ddof=1) / np.sqrt(chains) if chains > 1 else np.full(n_groups, np.nan)
    )
    return GroupChi(
        chi=-comoment / (count - 1),
        se=se,
        per_chain=per_chain,
        llc=float(config.n_beta * (trace.mean() - init_loss)),
        init_loss=init_loss,
        loss_trace=trace,
        group_sizes=np.bincount(group_index, minlength=n_groups),
    )


# --- the intervention ------------------------------------------------------------------------


def llc_intervention(
    chi_nested: np.ndarray,
    chi_equal: np.ndarray,
    group_index: np.ndarray,
    n_beta: float,
    alpha: float,
    floor: float,
) -> dict[str, Any]:
    """Group weights that lower λ(Nested) relative to λ(Equal-Count).

    Args:
        chi_nested: ``[S_N, G]`` χ_g of the Nested reference solutions.
        chi_equal: ``[S_E, G]`` χ_g of the Equal-Count reference solutions.
        group_index: ``[n]`` group of each training string.
        n_beta: nβ the χ were estimated with.
        alpha: largest relative change of a group's weight before the floor.
        floor: smallest allowed group weight before the rescaling (negative-weight policy:
            clip at the floor).

    Returns a dict with ``chi_diff [G]``; ``dh [G]``, unit norm, = −χ_diff/‖χ_diff‖;
    ``group_weights [G]``: ρ_g = max(1 + α·dh_g/max|dh|, floor), rescaled to mean 1 over
    strings; ``string_weights [n]``; ``group_shares [G]`` (π_g); and
    ``predicted_dllc_diff``: the linear-response change nβ²·Σ_g π_g·χ_diff,g·(ρ_g − 1) of
    λ(Nested) − λ(Equal-Count) at the reference solutions.
    """
    group_index = np.asarray(group_index)
    chi_diff = np.asarray(chi_nested).mean(axis=0) - np.asarray(chi_equal).mean(axis=0)
    shares = np.bincount(group_index, minlength=chi_diff.size) / group_index.size
    chi = xr.DataArray(
        chi_diff[None, :],
        dims=("component", "unit"),
        coords={"component": ["nested_minus_equal"], "unit": np.arange(chi_diff.size)},
    )
    dh = solve_intervention(chi, np.array([-1.0]), n_beta=n_beta).values
    norm = np.linalg.norm(dh)
    dh = dh / norm if norm > 0 else dh
    counts = np.bincount(group_index, minlength=chi_diff.size)
    group_rho = weights_from_intervention(dh, alpha, "clip", floor=floor, counts=counts)
    return {
        "chi_diff": chi_diff,
        "dh": dh,
        "group_weights": group_rho,
        "string_weights": group_rho[group_index],
        "group_shares": shares,
        "predicted_dllc_diff": float(n_beta**2 * (shares * chi_diff) @ (group_rho - 1.0)),
    }


def rule_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count, fraction and Wilson 95 % interval of each rule; mean OOD balanced rate ± SE."""
    n = len(records)
    out: dict[str, Any] = {"seeds": n}
    for rule in (NESTED, EQUAL_COUNT, MIXED, UNFIT):
        k = sum(r["rule"] == rule for r in records)
        out[rule] = {
            "count": k,
            "fraction": k / n if n else float("nan"),
            "ci95": list(wilson_interval(k, n)),
        }
    mean, se = mean_and_se([r["ood_balanced_rate"] for r in records])
    out["ood_balanced_rate"] = {"mean": mean, "se": se}
    return out


def sign_test(k: int, m: int) -> float:
    """Two-sided exact sign-test p-value: k changes one way, m the other, p = ½ each."""
    n = k + m
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, m) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_shift(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Per-seed change of the OOD balanced rate (after − before, same seed): mean ± SE, the
    seeds that moved toward Nested (rate fell) and toward Equal-Count, the sign-test p, and
    the rule transitions (``"nested->mixed": 2``, ...)."""
    d = [
        a["ood_balanced_rate"] - b["ood_balanced_rate"] for a, b in zip(after, before, strict=True)
    ]
    mean, se = mean_and_se(d)
    down, up = sum(x < 0 for x in d), sum(x > 0 for x in d)
    transitions: dict[str, int] = {}
    for a, b in zip(after, before, strict=True):
        key = f"{b['rule']}->{a['rule']}"
        transitions[key] = transitions.get(key, 0) + 1
    return {
        "mean": mean,
        "se": se,
        "toward_nested": down,
        "toward_equal": up,
        "sign_test_p": sign_test(down, up),
        "transitions": dict(sorted(transitions.items())),
    }


def llc_record(result: LLCResult) -> dict[str, Any]:
    """LLC with its health numbers: chain spread, R̂, and the level of the loss trace
    (nβ·(mean of the second half − mean of the first half of the draws), ≈ 0 when level)."""
    trace = result.loss_trace
    half = trace.shape[1] // 2
    return {
        "llc": result.mean,
        "llc_chain_std": result.std,
        "rhat": result.rhat,
        "init_loss": result.init_loss,
        "drift": result.config.n_beta * float(trace[:, half:].mean() - trace[:, :half].mean()),
    }


def reference_sets(
    records: Sequence[Mapping[str, Any]], per_rule: int
) -> tuple[list[int], list[int], str]:
    """Seeds of the Nested and Equal-Count reference solutions, and how they were chosen:
    by the thresholded rule when both occur (``threshold``), else the fitted seeds below /
    above the median OOD rate (``median_split``, for tiny runs)."""
    nested = [r["seed"] for r in records if r["rule"] == NESTED][:per_rule]
    equal = [r["seed"] for r in records if r["rule"] == EQUAL_COUNT][:per_rule]
    if nested and equal:
        return nested, equal, "threshold"
    fitted = sorted(
        (r for r in records if r["rule"] != UNFIT), key=lambda r: r["ood_balanced_rate"]
    )
    if len(fitted) < 2:
        raise RuntimeError("fewer than two seeds fit the training set; train longer.")
    half = len(fitted) // 2
    return (
        [r["seed"] for r in fitted[:half]][:per_rule],
        [r["seed"] for r in fitted[-half:]][:per_rule],
        "median_split",
    )


def chi_diff_se(
    nested: Sequence[Mapping[str, Any]], equal: Sequence[Mapping[str, Any]]
) -> list[float]:
    """``[G]`` standard error of χ_diff = mean χ(Nested) − mean χ(Equal-Count): from the
    spread between solutions of each rule (≥ 2 solutions), else the chains' SE."""

    def sq_se(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        chi = np.array([r["chi"] for r in rows])
        if len(rows) > 1:
            return chi.var(axis=0, ddof=1) / len(rows)
        return np.array(rows[0]["chi_se"]) ** 2

    return np.sqrt(sq_se(nested) + sq_se(equal)).tolist()


def mean_se_n(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean, standard error and count of ``row[key]`` over ``rows``."""
    mean, se = mean_and_se([r[key] for r in rows])
    return {"mean": mean, "se": se, "n": len(rows)}
