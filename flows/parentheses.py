"""The ``parentheses`` flow: algorithm selection in parentheses balancing (method.md §7).

Trains many classifiers whose training data both rules (Nested, Equal-Count) explain,
estimates the LLC and group susceptibilities of each kind of solution, re-weights the
data groups to lower λ(Nested) relative to λ(Equal-Count), retrains, and reports the
fraction of seeds learning each rule before and after. One task per unit of work
(``tasks/parentheses.py``), each cached on its inputs: a killed run, started again, trains
and samples only what it had not finished (per seed, per solution).

Parameters are a ``ParenthesesParameters`` model, validated by Prefect when the flow is
called and by the command line (``patterning parentheses``) before any server starts.
"""

from __future__ import annotations

import math
import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from patterning_core.experiments.parentheses.config import ExperimentConfig, build_config
from patterning_core.experiments.parentheses.selection import EQUAL_COUNT, NESTED
from patterning_core.experiments.parentheses.steps import (
    WEIGHTED,
    classify_seeds,
    references,
    retrained_references,
)
from patterning_core.workspace import patterning_home, settings_digest
from tasks.parentheses import (
    analyze_solution,
    linear_check,
    parentheses_report,
    parentheses_weights,
    train_seed,
)

RULES = (NESTED, EQUAL_COUNT)


class ParenthesesParameters(BaseModel):
    """Settings of the experiment; ``experiment_config()`` gives the full ``ExperimentConfig``
    (``patterning_core.experiments.parentheses.config.build_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(40, description="training seeds 0..seeds−1")
    analyzed_per_rule: int = Field(
        4, description="Nested and Equal-Count solutions whose LLC and χ are estimated"
    )
    alpha: float = Field(0.5, description="largest relative change of a group weight")
    floor: float = Field(0.1, description="smallest group weight, before rescaling to mean 1")
    threshold: float = Field(
        0.2, description="OOD balanced rate ≤ threshold: Nested; ≥ 1 − threshold: Equal-Count"
    )
    never_negative_share: float = Field(
        0.85, description="share of unbalanced strings whose prefix balance never goes negative"
    )
    weight_decay: float = Field(0.1, description="AdamW weight decay")
    train_steps: int = Field(600, description="optimizer steps per seed")
    linear_check: bool = Field(True, description="measure Δλ at the reference solutions")
    quick: bool = Field(False, description="tiny sizes, for a smoke test")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int) -> int:
        if v < 2:
            raise ValueError("needs at least 2 (one solution per rule); set seeds ≥ 2")
        return v

    @field_validator("analyzed_per_rule", "train_steps")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("alpha", "weight_decay")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError("must be a finite number ≥ 0")
        return v

    @field_validator("floor")
    @classmethod
    def _floor(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must lie in (0, 1], e.g. 0.1 (the default)")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not 0 < v < 0.5:
            raise ValueError("must lie in (0, 0.5), e.g. 0.2 (the default)")
        return v

    @field_validator("never_negative_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must lie in [0, 1]")
        return v

    @model_validator(mode="after")
    def _builds(self) -> ParenthesesParameters:
        self.experiment_config()  # any other inconsistency, as a ValueError naming it
        return self

    def experiment_config(self) -> ExperimentConfig:
        return build_config(**self.model_dump())


# Units run in threads, one per core (each task uses one torch thread). On the 2-core CPU
# (shared, busy), 8 quick seeds with analysis took 139 s and 60 s with 2 threads against
# 199 s and 152 s in sequence; the numbers are identical either way (seeding is thread-safe).
@flow(name="parentheses", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1))
def parentheses(
    params: ParenthesesParameters | None = None, out_dir: str | None = None
) -> dict[str, Any]:
    """Run the experiment with ``params`` (default: the published settings) into ``out_dir``
    (default ``$PATTERNING_HOME/parentheses/<digest of the parameters>``); a summary."""
    params = params or ParenthesesParameters()
    if out_dir is None:
        out_dir = str(patterning_home() / "parentheses" / settings_digest(params.model_dump()))
    logger = get_run_logger()
    cfg = params.experiment_config()
    c = cfg.to_dict()
    data, model, seeds = c["data"], c["model"], range(cfg.seeds)

    # Train every seed on the plain loss, and classify each by its OOD answers.
    baseline = {s: train_seed.submit(data, model, c["train"], s) for s in seeds}
    before = classify_seeds(
        [baseline[s].result()["record"] for s in seeds], cfg.threshold, cfg.min_train_acc
    )
    refs = references(before, cfg.analyzed_per_rule)
    logger.info("reference solutions: %s", refs)

    # LLC and group χ of the reference solutions of each rule.
    analyzed = {
        rule: [
            analyze_solution.submit(
                data,
                model,
                c["sampler"],
                baseline[s],
                chi_sampler=c["chi_sampler"],
                probes_per_group=cfg.probes_per_group,
            )
            for s in refs[rule]
        ]
        for rule in RULES
    }
    rows = {rule: [f.result() for f in futures] for rule, futures in analyzed.items()}

    # The weights that lower λ(Nested) − λ(Equal-Count).
    plan = parentheses_weights(
        data, rows[NESTED], rows[EQUAL_COUNT], cfg.sampler.n_beta, cfg.alpha, cfg.floor
    )

    # Linear check at the reference solutions, while every seed retrains with the weights.
    checks = {
        rule: [
            linear_check.submit(
                data,
                model,
                c["chi_sampler"],
                cfg.probes_per_group,
                baseline[r["seed"]],
                plan,
                r,
            )
            for r in rows[rule]
        ]
        for rule in (RULES if cfg.linear_check else ())
    }
    weights = plan["string_weights"]
    weighted = {s: train_seed.submit(data, model, c["train"], s, WEIGHTED, weights) for s in seeds}
    after = classify_seeds(
        [weighted[s].result()["record"] for s in seeds], cfg.threshold, cfg.min_train_acc
    )

    # LLC of the weighted loss at the first retrained solutions of each rule.
    analyzed_after = {
        rule: [
            analyze_solution.submit(data, model, c["sampler"], weighted[s], weights)
            for s in retrained
        ]
        for rule, retrained in retrained_references(after, cfg.analyzed_per_rule).items()
    }
    analysis_before = {rule: list(rows[rule]) for rule in RULES}
    for rule, futures in checks.items():
        analysis_before[rule] = [
            {**r, "linear_check": f.result()} for r, f in zip(rows[rule], futures, strict=True)
        ]
    analysis_after = {rule: [f.result() for f in fs] for rule, fs in analyzed_after.items()}
    return parentheses_report(
        c, before, after, refs, analysis_before, analysis_after, plan, out_dir
    )
