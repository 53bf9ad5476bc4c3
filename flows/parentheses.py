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

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.parameters import ParenthesesParameters
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
