"""The parentheses experiment as units of work, each a plain function with JSON-able results.

The experiment (``selection`` has the method) is the composition

    train_seed (each seed, plain loss)  →  classify_seeds  →  reference_sets
    →  analyze_solution (each reference solution: LLC and group χ)
    →  intervention_plan  →  linear_check (each reference solution)
    →  train_seed (each seed, ρ-weighted)  →  classify_seeds
    →  analyze_solution (first retrained solutions of each rule: LLC of L_ρ)
    →  assemble_result

Every unit depends only on its arguments (settings, a seed, a trained solution, the weights),
so it can be cached and resumed on its own: the Prefect flow ``flows/parentheses.py`` runs one
task per unit, and ``run_experiment`` here runs them in sequence, in plain Python (notebooks,
tests). Both give the same numbers: a trained solution passes between units as JSON
(``params_to_json``), which round-trips float32 exactly.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patterning_core.estimators.intervention import weighted_loss, with_weights
from patterning_core.estimators.llc import estimate_llc
from patterning_core.experiments.parentheses.classifier import (
    Params,
    ParenModelConfig,
    ParenTrainConfig,
    make_loss_fn,
    predict_balanced,
    train_classifier,
)
from patterning_core.experiments.parentheses.config import ExperimentConfig
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


def assemble_result(
    cfg: ExperimentConfig,
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    reference_seeds: Mapping[str, Any],
    analysis_before: Mapping[str, Sequence[Mapping[str, Any]]],
    analysis_after: Mapping[str, Sequence[Mapping[str, Any]]],
    plan: Mapping[str, Any],
) -> dict[str, Any]:
    """The experiment's result, plain data.

    Keys: ``config``; ``groups`` (names, sizes, kinds); ``reference_sets``; ``before`` /
    ``after`` (per-seed records, classified); ``summary_before`` / ``summary_after``
    (``rule_summary``); ``paired_shift``; ``analysis_before`` (per rule: per reference
    solution LLC, health, χ, linear check) and ``analysis_after`` (per rule: LLC of L_ρ of
    retrained solutions); ``llc`` (mean ± SE per rule); ``intervention`` (the plan without
    the per-string weights, and ``probes_per_group``); ``timing_s``: compute time of the
    units (training and sampling, one torch thread each).
    """
    setup = prepare(cfg.data)
    group_index, names = setup.group_index, setup.group_names
    kinds = {
        name: sorted(set(setup.train_set.kinds[group_index == g].tolist()))
        for g, name in enumerate(names)
    }
    analyses = [r for a in (analysis_before, analysis_after) for rows in a.values() for r in rows]
    checks = [r["linear_check"] for r in analyses if "linear_check" in r]
    seconds = sum(u.get("seconds", 0.0) for u in (*before, *after, *analyses, *checks))
    intervention = {k: v for k, v in plan.items() if k != "string_weights"}
    return {
        "config": cfg.to_dict(),
        "groups": {
            "names": names,
            "sizes": np.bincount(group_index, minlength=len(names)).tolist(),
            "kinds": kinds,
        },
        "reference_sets": dict(reference_seeds),
        "before": list(before),
        "after": list(after),
        "summary_before": rule_summary(before),
        "summary_after": rule_summary(after),
        "paired_shift": paired_shift(before, after),
        "analysis_before": {rule: list(rows) for rule, rows in analysis_before.items()},
        "analysis_after": {rule: list(rows) for rule, rows in analysis_after.items()},
        "llc": {
            "before": {rule: mean_se_n(rows, "llc") for rule, rows in analysis_before.items()},
            "after_weighted_loss": {
                rule: mean_se_n(rows, "llc") for rule, rows in analysis_after.items()
            },
        },
        "intervention": {
            **intervention,
            "probes_per_group": cfg.probes_per_group,
        },
        "timing_s": float(seconds),
    }


# --- the driver ---------------------------------------------------------------------------------


def run_experiment(cfg: ExperimentConfig, progress: Progress | None = None) -> dict[str, Any]:
    """The whole experiment in sequence, in this process (``assemble_result`` has the keys).

    The Prefect flow ``parentheses`` runs the same units as separate, cached tasks.
    """
    say = progress or (lambda _msg: None)
    setup = prepare(cfg.data)
    say(
        f"data: {len(setup.train_set)} training strings in {len(setup.group_names)} groups, "
        f"{len(setup.ood_set)} OOD strings"
    )

    def train_all(weights: Any, label: str) -> tuple[list[dict[str, Any]], dict[int, Params]]:
        records, solutions = [], {}
        for seed in range(cfg.seeds):
            record, solutions[seed] = train_seed(setup, cfg.model, cfg.train, seed, weights)
            records.append(record)
            say(f"[{label}] {describe_seed(record)}")
        return classify_seeds(records, cfg.threshold, cfg.min_train_acc), solutions

    before, solutions = train_all(None, BASELINE)
    refs = references(before, cfg.analyzed_per_rule)
    analysis_before = {
        rule: [
            analyze_solution(
                setup,
                cfg.model,
                cfg.sampler,
                seed,
                solutions[seed],
                chi_sampler=cfg.chi_sampler,
                probes_per_group=cfg.probes_per_group,
            )
            for seed in refs[rule]
        ]
        for rule in (NESTED, EQUAL_COUNT)
    }
    for rule, rows in analysis_before.items():
        for row in rows:
            say(f"[LLC {rule}] {describe_analysis(row)}")
    plan = intervention_plan(
        setup,
        analysis_before[NESTED],
        analysis_before[EQUAL_COUNT],
        cfg.sampler.n_beta,
        cfg.alpha,
        cfg.floor,
    )
    say(describe_plan(plan, setup.group_names))
    if cfg.linear_check:
        for rule, rows in analysis_before.items():
            for row in rows:
                row["linear_check"] = linear_check(
                    setup,
                    cfg.model,
                    cfg.chi_sampler,
                    cfg.probes_per_group,
                    solutions[row["seed"]],
                    plan,
                    row,
                )
                say(f"[linear check {rule}] {describe_check(row)}")
    after, solutions_after = train_all(plan["string_weights"], WEIGHTED)
    analysis_after = {
        rule: [
            analyze_solution(
                setup, cfg.model, cfg.sampler, seed, solutions_after[seed], plan["string_weights"]
            )
            for seed in seeds
        ]
        for rule, seeds in retrained_references(after, cfg.analyzed_per_rule).items()
    }
    return assemble_result(cfg, before, after, refs, analysis_before, analysis_after, plan)


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


def describe_plan(plan: Mapping[str, Any], names: Sequence[str]) -> str:
    weights = zip(names, plan["group_weights"], strict=True)
    return "group weights: " + ", ".join(f"{n} {w:.2f}" for n, w in weights)


def describe_check(row: Mapping[str, Any]) -> str:
    check = row["linear_check"]
    return (
        f"seed {row['seed']}: Δλ measured {check['measured_dllc']:+.2f}, predicted "
        f"{check['predicted_dllc']:+.2f}"
    )
