"""The parentheses experiment as units of work, each a plain function with JSON-able results.

The experiment (``selection`` has the statistics, ``lever`` the per-string method) is

    train_seed (each seed, plain loss)  →  classify_seeds  →  references (by OOD behaviour)
    →  lever_baseline (each reference solution: per-string χ, λ)  →  lever_plan (weights)
    →  lever_check (each reference solution and α)  +  lever_temperature (each solution)
    →  linear_check_table  →  lever_gate
    →  only if ``should_retrain``: train_seed (each seed, ρ-weighted)  →  classify_seeds
       →  analyze_solution (first retrained solutions of each rule: λ of L_ρ)
    →  assemble_result

Every unit depends only on its arguments (settings, a seed, a trained solution, the weights),
so it can be cached and resumed on its own: the Prefect flow ``flows/parentheses.py`` runs one
task per unit, and ``run_experiment`` here runs them in sequence, in plain Python (notebooks,
tests). Both give the same numbers: a trained solution passes between units as JSON
(``params_to_json``), which round-trips float32 exactly.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patterning_core.estimators.intervention import weighted_loss, with_weights
from patterning_core.estimators.llc import estimate_llc
from patterning_core.experiments.parentheses import lever
from patterning_core.experiments.parentheses.classifier import (
    Params,
    ParenModelConfig,
    ParenTrainConfig,
    make_loss_fn,
    predict_balanced,
    train_classifier,
)
from patterning_core.experiments.parentheses.config import ExperimentConfig
from patterning_core.experiments.parentheses.lever import LeverConfig
from patterning_core.experiments.parentheses.selection import (
    EQUAL_COUNT,
    NESTED,
    chi_diff_se,
    classify_rule,
    group_susceptibilities,
    llc_intervention,
    llc_record,
    mean_se_n,
    paired_shift,
    reference_sets,
    rule_summary,
    stratified_probes,
)
from patterning_core.experiments.parentheses.strings import (
    ParenDataConfig,
    ParenDataset,
    group_units,
    make_ood_set,
    make_training_set,
)
from patterning_core.sampling.diagnostics import split_rhat
from patterning_core.sampling.sgld import SamplerConfig, evaluate_in_chunks

BASELINE, WEIGHTED = "baseline", "weighted"
RULES = (NESTED, EQUAL_COUNT)
CONDITIONS = (BASELINE, WEIGHTED)

Progress = Callable[[str], None]


# --- the data, and solutions as JSON ------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """The data every unit works on, drawn from ``ParenDataConfig`` (deterministic).

    Attributes:
        train_set, ood_set: the training strings and the OOD strings (equal counts, not
            nested).
        data: ``(tokens [n, T], labels [n])`` of the training strings.
        ood_tokens: ``[n_ood, T]``.
        group_index: ``[n]`` group of each training string; group_names: their names.
    """

    config: ParenDataConfig
    train_set: ParenDataset
    ood_set: ParenDataset
    data: tuple[Tensor, Tensor]
    ood_tokens: Tensor
    group_index: np.ndarray
    group_names: list[str]

    def probes(self, per_group: int | None) -> np.ndarray:
        """Indices of the probe strings of the χ runs (``stratified_probes``)."""
        return stratified_probes(self.group_index, per_group, self.config.seed)

    def groups(self, per_group: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(group index [n], probe index)`` as ``analyze_solution`` takes them."""
        return self.group_index, self.probes(per_group)


@functools.lru_cache(maxsize=4)
def prepare(config: ParenDataConfig) -> Setup:
    """Draw the training and OOD sets and the groups (cached: every unit of a run shares
    them; treat the tensors as read-only)."""
    train_set, ood_set = make_training_set(config), make_ood_set(config)
    group_index, group_names = group_units(train_set)
    return Setup(
        config=config,
        train_set=train_set,
        ood_set=ood_set,
        data=train_set.tensors(config.max_len),
        ood_tokens=ood_set.tensors(config.max_len)[0],
        group_index=group_index,
        group_names=group_names,
    )


def params_to_json(params: Mapping[str, Tensor]) -> list[list[Any]]:
    """``[[name, nested list of values], ...]`` in the parameters' order (float32 values
    are exact as JSON numbers; a list keeps the order whatever a serializer does to keys)."""
    return [[name, value.detach().tolist()] for name, value in params.items()]


def params_from_json(values: Sequence[Sequence[Any]]) -> Params:
    """Inverse of ``params_to_json`` (float32 tensors, same order, same bits)."""
    return {str(name): torch.tensor(value, dtype=torch.float32) for name, value in values}


def weights_tensor(weights: Sequence[float] | np.ndarray | Tensor | None) -> Tensor | None:
    """String weights ρ as the float32 tensor training and sampling use (None: plain)."""
    return None if weights is None else torch.as_tensor(weights, dtype=torch.float32)


# --- units of work ------------------------------------------------------------------------------


def train_seed(
    setup: Setup,
    model: ParenModelConfig,
    train: ParenTrainConfig,
    seed: int,
    weights: Sequence[float] | np.ndarray | Tensor | None = None,
) -> tuple[dict[str, Any], Params]:
    """Train seed ``seed`` (its initialization and data order), ρ-weighted with ``weights``
    (``[n]``; None: the plain loss). Returns its record (``seed``, ``train_acc``,
    ``train_loss`` (unweighted), ``ood_balanced_rate``, ``seconds``) and the solution."""
    start = time.perf_counter()
    data, labels = setup.data, setup.data[1].numpy() > 0.5
    params, _ = train_classifier(data, model, train, seed, weights=weights_tensor(weights))
    record = {
        "seed": seed,
        "train_acc": float((predict_balanced(params, data[0], model) == labels).mean()),
        "train_loss": float(evaluate_in_chunks(make_loss_fn(model), params, data).double().mean()),
        "ood_balanced_rate": float(predict_balanced(params, setup.ood_tokens, model).mean()),
        "seconds": time.perf_counter() - start,
    }
    return record, params


def classify_seeds(
    records: Sequence[Mapping[str, Any]], threshold: float, min_train_acc: float
) -> list[dict[str, Any]]:
    """The records with each seed's ``rule`` (``classify_rule``), in seed order."""
    return [
        {
            **r,
            "rule": classify_rule(r["ood_balanced_rate"], r["train_acc"], threshold, min_train_acc),
        }
        for r in sorted(records, key=lambda r: r["seed"])
    ]


def references(records: Sequence[Mapping[str, Any]], per_rule: int) -> dict[str, Any]:
    """``{"nested": seeds, "equal_count": seeds, "how": ...}`` (``reference_sets``)."""
    nested, equal, how = reference_sets(records, per_rule)
    return {NESTED: nested, EQUAL_COUNT: equal, "how": how}


def retrained_references(records: Sequence[Mapping[str, Any]], per_rule: int) -> dict[str, Any]:
    """The first ``per_rule`` retrained seeds of each rule (their LLC of L_ρ is reported)."""
    return {
        rule: [r["seed"] for r in records if r["rule"] == rule][:per_rule]
        for rule in (NESTED, EQUAL_COUNT)
    }


def analyze_solution(
    setup: Setup,
    model: ParenModelConfig,
    sampler: SamplerConfig,
    seed: int,
    params: Mapping[str, Tensor],
    weights: Sequence[float] | np.ndarray | Tensor | None = None,
    chi_sampler: SamplerConfig | None = None,
    probes_per_group: int | None = None,
) -> dict[str, Any]:
    """LLC of one solution (``estimate_llc`` with ``sampler``) of the ρ-weighted loss L_ρ
    (``weights``; None: the plain L_n), with its health numbers (``llc_record``). With a
    ``chi_sampler``, also its group χ at ρ = 1 (``group_susceptibilities``, probes
    ``probes_per_group`` strings per group) and the χ run's LLC, R̂ and mean loss."""
    start = time.perf_counter()
    loss = weighted_loss(make_loss_fn(model))
    data = setup.data
    row = {
        "seed": seed,
        **llc_record(
            estimate_llc(loss, params, with_weights(data, weights_tensor(weights)), sampler)
        ),
    }
    if chi_sampler is not None:
        group_index, probe_index = setup.groups(probes_per_group)
        gchi = group_susceptibilities(
            loss,
            params,
            with_weights(data, None),
            group_index,
            chi_sampler,
            probe_index=probe_index,
        )
        row.update(
            {
                "chi": gchi.chi.tolist(),
                "chi_se": gchi.se.tolist(),
                "chi_run_llc": gchi.llc,
                "chi_run_rhat": split_rhat(gchi.loss_trace),
                "chi_run_mean_loss": float(gchi.loss_trace.mean()),
            }
        )
    row["seconds"] = time.perf_counter() - start
    return row


def intervention_plan(
    setup: Setup,
    nested_rows: Sequence[Mapping[str, Any]],
    equal_rows: Sequence[Mapping[str, Any]],
    n_beta: float,
    alpha: float,
    floor: float,
) -> dict[str, Any]:
    """Group and string weights from the χ of the analyzed reference solutions
    (``llc_intervention``), as lists: ``chi_diff``, ``chi_diff_se``, ``chi_nested_mean``,
    ``chi_equal_mean``, ``dh``, ``group_weights``, ``string_weights``, ``group_shares``,
    ``predicted_dllc_diff``, ``alpha``, ``floor``."""
    chi_n = np.array([r["chi"] for r in nested_rows])
    chi_e = np.array([r["chi"] for r in equal_rows])
    plan = llc_intervention(chi_n, chi_e, setup.group_index, n_beta, alpha, floor)
    return {
        "chi_diff": plan["chi_diff"].tolist(),
        "chi_diff_se": chi_diff_se(nested_rows, equal_rows),
        "chi_nested_mean": chi_n.mean(axis=0).tolist(),
        "chi_equal_mean": chi_e.mean(axis=0).tolist(),
        "dh": plan["dh"].tolist(),
        "group_weights": plan["group_weights"].tolist(),
        "string_weights": plan["string_weights"].tolist(),
        "group_shares": plan["group_shares"].tolist(),
        "predicted_dllc_diff": plan["predicted_dllc_diff"],
        "alpha": alpha,
        "floor": floor,
    }


def linear_check(
    setup: Setup,
    model: ParenModelConfig,
    chi_sampler: SamplerConfig,
    probes_per_group: int | None,
    params: Mapping[str, Tensor],
    plan: Mapping[str, Any],
    row: Mapping[str, Any],
) -> dict[str, float]:
    """Measured vs predicted change of λ at a fixed solution w* when the posterior becomes
    that of the ρ-weighted loss L_ρ: measured nβ·(E_ρ[L_n] − E[L_n]), both from χ runs with
    the same chains' noise (common random numbers), E[L_n] from ``row`` (its
    ``analyze_solution``); predicted nβ²·Σ_g π_g χ_g (ρ_g − 1) with the solution's own χ."""
    start = time.perf_counter()
    group_index, probe_index = setup.groups(probes_per_group)
    unweighted = with_weights(setup.data, None)
    gchi = group_susceptibilities(
        weighted_loss(make_loss_fn(model)),
        params,
        with_weights(setup.data, weights_tensor(plan["string_weights"])),
        group_index,
        chi_sampler,
        probe_index=probe_index,
        probe_data=tuple(t[torch.as_tensor(probe_index)] for t in unweighted),
    )
    n_beta = chi_sampler.n_beta
    shares, rho = np.asarray(plan["group_shares"]), np.asarray(plan["group_weights"])
    return {
        "measured_dllc": float(n_beta * (gchi.loss_trace.mean() - row["chi_run_mean_loss"])),
        "predicted_dllc": float(n_beta**2 * (shares * np.asarray(row["chi"])) @ (rho - 1.0)),
        "seconds": time.perf_counter() - start,
    }


# --- the lever: per-string χ and its linear check ---------------------------------------------

# Keys of a lever baseline that are per-string or per-chain arrays (kept out of the result).
_BULKY = ("chi_direction", "chi_check", "chi_check_per_chain", "chain_mean_loss")


def lever_baseline(
    setup: Setup,
    model: ParenModelConfig,
    cfg: LeverConfig,
    seed: int,
    params: Mapping[str, Tensor],
) -> dict[str, Any]:
    """The unweighted lever run of one reference solution (``lever.baseline_run``): per-string
    χ from the direction and the check chains, ⟨L_n⟩ and λ with SE, and trace health."""
    start = time.perf_counter()
    row = lever.baseline_run(make_loss_fn(model), params, setup.data, cfg)
    return {"seed": seed, **row, "seconds": time.perf_counter() - start}


def lever_plan(
    setup: Setup,
    nested_rows: Sequence[Mapping[str, Any]],
    equal_rows: Sequence[Mapping[str, Any]],
    alphas: Sequence[float],
    retrain_alpha: float,
) -> dict[str, Any]:
    """String weights from the direction chains' χ of all reference solutions
    (``lever.lever_weights``), at every α of the check and at the retraining α.

    Returns ``chi_diff [n]``, ``dh [n]``, ``weights``: ``{str(α): [n]}``, and
    ``distribution``: per α, quantiles of ρ and the mean ρ of each kind of string
    (``nested``, ``never_negative``, ``arrangement``).
    """
    chi_n = np.array([r["chi_direction"] for r in nested_rows])
    chi_e = np.array([r["chi_direction"] for r in equal_rows])
    out: dict[str, Any] = {"weights": {}, "distribution": {}}
    kinds = setup.train_set.kinds
    for alpha in sorted({*alphas, retrain_alpha}):
        plan = lever.lever_weights(chi_n, chi_e, alpha)
        rho = plan["weights"]
        out["chi_diff"], out["dh"] = plan["chi_diff"].tolist(), plan["dh"].tolist()
        out["weights"][str(alpha)] = rho.tolist()
        out["distribution"][str(alpha)] = {
            "quantiles": {
                str(q): float(np.quantile(rho, q)) for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
            },
            "mean_by_kind": {str(k): float(rho[kinds == k].mean()) for k in np.unique(kinds)},
        }
    return out


def lever_check(
    setup: Setup,
    model: ParenModelConfig,
    cfg: LeverConfig,
    params: Mapping[str, Tensor],
    weights: Sequence[float],
    baseline: Mapping[str, Any],
    alpha: float,
) -> dict[str, Any]:
    """Re-sample one reference solution under the ρ-weighted loss (check chains, common
    random numbers) and compare with the prediction (``lever.reweighted_run``)."""
    start = time.perf_counter()
    row = lever.reweighted_run(
        make_loss_fn(model), params, setup.data, np.asarray(weights), cfg, baseline
    )
    return {"seed": baseline["seed"], "alpha": alpha, **row, "seconds": time.perf_counter() - start}


def lever_temperature(
    setup: Setup,
    model: ParenModelConfig,
    cfg: LeverConfig,
    params: Mapping[str, Tensor],
    baseline: Mapping[str, Any],
) -> dict[str, Any]:
    """The sampler's own fluctuation–dissipation check at one reference solution: nβ raised
    by ``cfg.temperature_factor`` (``lever.temperature_check``)."""
    start = time.perf_counter()
    row = lever.temperature_check(make_loss_fn(model), params, setup.data, cfg, baseline)
    return {"seed": baseline["seed"], **row, "seconds": time.perf_counter() - start}


def linear_check_table(
    checks: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], alphas: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per (α, pair): pair i = (i-th Nested, i-th Equal-Count reference); the
    predicted and measured change of λ(Nested) − λ(Equal-Count), each with its SE (the two
    solutions' SEs in quadrature), and the seeds. ``checks[rule][i][k]``: solution i, α k."""
    rows = []
    pairs = min(len(checks[NESTED]), len(checks[EQUAL_COUNT]))
    for k, alpha in enumerate(alphas):
        for i in range(pairs):
            a, b = checks[NESTED][i][k], checks[EQUAL_COUNT][i][k]
            rows.append(
                {
                    "alpha": alpha,
                    "pair": i,
                    "predicted": a["predicted"] - b["predicted"],
                    "measured": a["measured"] - b["measured"],
                    "predicted_se": math.hypot(a["predicted_se"], b["predicted_se"]),
                    "measured_se": math.hypot(a["measured_se"], b["measured_se"]),
                    "seeds": [a["seed"], b["seed"]],
                }
            )
    return rows


def lever_gate(
    table: Sequence[Mapping[str, Any]], lo: float = 0.5, hi: float = 2.0, share: float = 0.75
) -> dict[str, Any]:
    """The gate: at every α, measured/predicted within [lo, hi] (so the sign right too) on at
    least ``share`` of the pairs (6 of 8). Returns per α the pairs, the sign agreements, the
    ratios in range and the median ratio, and ``passes``."""
    per_alpha: dict[str, Any] = {}
    for alpha in sorted({r["alpha"] for r in table}):
        rows = [r for r in table if r["alpha"] == alpha]
        ratios = [r["measured"] / r["predicted"] if r["predicted"] else math.nan for r in rows]
        in_range = sum(lo <= x <= hi for x in ratios)
        per_alpha[str(alpha)] = {
            "pairs": len(rows),
            "sign_agree": sum(x > 0 for x in ratios),
            "ratio_in_range": in_range,
            "median_ratio": float(np.nanmedian(ratios)) if rows else math.nan,
            "passes": bool(rows) and in_range >= math.ceil(share * len(rows)),
        }
    return {
        "criterion": f"measured/predicted in [{lo}, {hi}] on ≥ {share:.0%} of pairs, every α",
        "per_alpha": per_alpha,
        "passes": bool(per_alpha) and all(v["passes"] for v in per_alpha.values()),
    }


def should_retrain(mode: str, gate: Mapping[str, Any]) -> bool:
    """``always``; ``never``; ``if_validated``: only when the gate passed."""
    return mode == "always" or (mode == "if_validated" and bool(gate["passes"]))


def _slim(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _BULKY}


def assemble_result(
    cfg: ExperimentConfig,
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]] | None,
    reference_seeds: Mapping[str, Any],
    baselines: Mapping[str, Sequence[Mapping[str, Any]]],
    plan: Mapping[str, Any],
    checks: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    analysis_after: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    temperature: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The experiment's result, plain data (``results.json``).

    The keys of the issue's form: ``alpha`` (of the retraining), ``alpha_fixed_before_
    retraining``, ``seeds``, ``reference_solutions`` (counts), ``nested_before`` /
    ``nested_after`` / ``equal_count_before`` / ``equal_count_after`` (None without
    retraining), ``paired_sign_test_p``, ``linear_check`` (``linear_check_table``). More:
    ``gate``, ``retrained``, ``config``, ``reference_sets``, ``before`` / ``after`` (per-seed
    records), ``summary_before`` / ``summary_after``, ``paired_shift``, ``lever_baselines``
    (per reference solution with the lever, ``lever_solutions`` of each rule: λ of L_n ± SE,
    health; no per-string arrays), ``lever_checks``
    (per solution and α), ``llc`` (λ of L_n at the references; λ of L_ρ at the retrained
    solutions, mean ± SE per rule), ``weights`` (the distribution per α, and the per-string
    ``chi_diff``, ``dh`` and ρ at the retraining α), ``temperature_checks`` (per lever
    solution: the sampler's fluctuation–dissipation check for nβ), ``timing_s``.
    """
    table = linear_check_table(checks, cfg.lever.alphas) if checks else []
    gate = lever_gate(table)
    summary_before = rule_summary(before)
    summary_after = rule_summary(after) if after else None
    shift = paired_shift(before, after) if after else None
    slim_checks = [_slim(c) for rows in checks.values() for per in rows for c in per]
    units = [
        *before,
        *(after or []),
        *[b for rows in baselines.values() for b in rows],
        *slim_checks,
        *temperature,
        *[a for rows in (analysis_after or {}).values() for a in rows],
    ]
    count = {
        rule: {
            "before": summary_before[rule]["count"],
            "after": summary_after[rule]["count"] if summary_after else None,
        }
        for rule in (NESTED, EQUAL_COUNT)
    }
    return {
        "alpha": cfg.alpha,
        "alpha_fixed_before_retraining": True,
        "seeds": cfg.seeds,
        "reference_solutions": {rule: len(reference_seeds[rule]) for rule in (NESTED, EQUAL_COUNT)},
        "lever_solutions": {rule: len(baselines[rule]) for rule in (NESTED, EQUAL_COUNT)},
        "nested_before": count[NESTED]["before"],
        "nested_after": count[NESTED]["after"],
        "equal_count_before": count[EQUAL_COUNT]["before"],
        "equal_count_after": count[EQUAL_COUNT]["after"],
        "paired_sign_test_p": shift["sign_test_p"] if shift else None,
        "linear_check": table,
        "gate": gate,
        "retrained": after is not None,
        "config": cfg.to_dict(),
        "reference_sets": dict(reference_seeds),
        "before": list(before),
        "after": list(after) if after else None,
        "summary_before": summary_before,
        "summary_after": summary_after,
        "paired_shift": shift,
        "lever_baselines": {rule: [_slim(r) for r in rows] for rule, rows in baselines.items()},
        "lever_checks": slim_checks,
        "temperature_checks": list(temperature),
        "llc": {
            "references_plain_loss": {
                rule: mean_se_n(rows, "llc") for rule, rows in baselines.items()
            },
            "retrained_weighted_loss": (
                {rule: mean_se_n(rows, "llc") for rule, rows in analysis_after.items()}
                if analysis_after
                else None
            ),
        },
        "analysis_after": {r: list(v) for r, v in (analysis_after or {}).items()} or None,
        "weights": {
            "distribution": plan["distribution"],
            "chi_diff": plan["chi_diff"],
            "dh": plan["dh"],
            "retrain_weights": plan["weights"][str(cfg.alpha)],
        },
        "timing_s": float(sum(u.get("seconds", 0.0) for u in units)),
    }


# --- the driver ---------------------------------------------------------------------------------


def run_experiment(cfg: ExperimentConfig, progress: Progress | None = None) -> dict[str, Any]:
    """The whole experiment in sequence, in this process (``assemble_result`` has the keys):
    train every seed, pick the reference solutions, validate the lever at them, and retrain
    with the lever's weights only as ``cfg.retrain`` says.

    The Prefect flow ``parentheses`` runs the same units as separate, cached tasks.
    """
    say = progress or (lambda _msg: None)
    setup = prepare(cfg.data)
    say(f"data: {len(setup.train_set)} training strings, {len(setup.ood_set)} OOD strings")

    def train_all(weights: Any, label: str) -> tuple[list[dict[str, Any]], dict[int, Params]]:
        records, solutions = [], {}
        for seed in range(cfg.seeds):
            record, solutions[seed] = train_seed(setup, cfg.model, cfg.train, seed, weights)
            records.append(record)
            say(f"[{label}] {describe_seed(record)}")
        return classify_seeds(records, cfg.threshold, cfg.min_train_acc), solutions

    before, solutions = train_all(None, BASELINE)
    refs = references(before, cfg.analyzed_per_rule)
    baselines = {
        rule: [lever_baseline(setup, cfg.model, cfg.lever, s, solutions[s]) for s in refs[rule]]
        for rule in RULES
    }
    for rule, rows in baselines.items():
        for row in rows:
            say(f"[lever {rule}] {describe_baseline(row)}")
    plan = lever_plan(setup, baselines[NESTED], baselines[EQUAL_COUNT], cfg.lever.alphas, cfg.alpha)
    checks: dict[str, list[list[dict[str, Any]]]] = {}
    if cfg.linear_check:
        checks = {
            rule: [
                [
                    lever_check(
                        setup,
                        cfg.model,
                        cfg.lever,
                        solutions[b["seed"]],
                        plan["weights"][str(a)],
                        b,
                        a,
                    )
                    for a in cfg.lever.alphas
                ]
                for b in rows
            ]
            for rule, rows in baselines.items()
        }
    temperature = []
    if cfg.linear_check:
        temperature = [
            lever_temperature(setup, cfg.model, cfg.lever, solutions[b["seed"]], b)
            for rule in RULES
            for b in baselines[rule]
        ]
    gate = lever_gate(linear_check_table(checks, cfg.lever.alphas) if checks else [])
    say(describe_gate(gate))
    after = analysis_after = None
    if should_retrain(cfg.retrain, gate):
        weights = plan["weights"][str(cfg.alpha)]
        after, solutions_after = train_all(weights, WEIGHTED)
        analysis_after = {
            rule: [
                analyze_solution(setup, cfg.model, cfg.sampler, s, solutions_after[s], weights)
                for s in seeds
            ]
            for rule, seeds in retrained_references(after, cfg.analyzed_per_rule).items()
        }
    return assemble_result(
        cfg, before, after, refs, baselines, plan, checks, analysis_after, temperature
    )


# --- progress lines -----------------------------------------------------------------------------


def describe_seed(record: Mapping[str, Any]) -> str:
    return (
        f"seed {record['seed']}: train acc {record['train_acc']:.3f}, OOD balanced "
        f"{record['ood_balanced_rate']:.3f} ({record['seconds']:.1f} s)"
    )


def describe_analysis(row: Mapping[str, Any]) -> str:
    text = f"seed {row['seed']}: LLC {row['llc']:.2f} ± {row['llc_chain_std']:.2f} (R̂ "
    text += f"{row['rhat']:.3f}, drift {row['drift']:+.2f}"
    if "chi_run_llc" in row:
        text += f"; χ run {row['chi_run_llc']:.2f}"
    return text + f") ({row['seconds']:.1f} s)"


def describe_baseline(row: Mapping[str, Any]) -> str:
    return (
        f"seed {row['seed']}: λ {row['llc']:.2f} ± {row['llc_se']:.2f} (R̂ {row['rhat']:.3f}, "
        f"drift {row['drift']:+.2f} ± {row['drift_se']:.2f}) ({row['seconds']:.1f} s)"
    )


def describe_lever_check(row: Mapping[str, Any]) -> str:
    return (
        f"seed {row['seed']} α {row['alpha']}: Δλ measured {row['measured']:+.2f} ± "
        f"{row['measured_se']:.2f}, predicted {row['predicted']:+.2f} ± "
        f"{row['predicted_se']:.2f} ({row['seconds']:.1f} s)"
    )


def describe_gate(gate: Mapping[str, Any]) -> str:
    parts = [
        f"α {a}: {v['ratio_in_range']}/{v['pairs']} in range, {v['sign_agree']} signs right"
        for a, v in gate["per_alpha"].items()
    ]
    return f"lever gate {'passed' if gate['passes'] else 'not passed'}: " + "; ".join(parts)


def describe_plan(plan: Mapping[str, Any], names: Sequence[str]) -> str:
    weights = zip(names, plan["group_weights"], strict=True)
    return "group weights: " + ", ".join(f"{n} {w:.2f}" for n, w in weights)


def describe_check(row: Mapping[str, Any]) -> str:
    check = row["linear_check"]
    return (
        f"seed {row['seed']}: Δλ measured {check['measured_dllc']:+.2f}, predicted "
        f"{check['predicted_dllc']:+.2f}"
    )
