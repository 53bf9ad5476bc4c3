"""The ``parentheses`` flow: algorithm selection in parentheses balancing (method.md §7).

Trains many classifiers whose training data both rules (Nested, Equal-Count) explain,
picks reference solutions of each rule by their OOD answers, estimates per-string
susceptibilities of each one's LLC, and validates the lever before using it: the measured
change of λ(Nested) − λ(Equal-Count) at fixed solutions under ρ-weighted re-sampling against
the first-order prediction, at small α. Only if that gate passes (``retrain``) are the seeds
retrained with the weights at the α fixed in the settings, and the fraction learning each
rule compared before and after. One task per unit of work
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
    describe_gate,
    lever_gate,
    linear_check_table,
    references,
    retrained_references,
    should_retrain,
)
from patterning_core.workspace import patterning_home, settings_digest
from tasks.parentheses import (
    analyze_solution,
    lever_baseline,
    lever_check,
    lever_plan,
    lever_temperature,
    parentheses_report,
    train_seed,
)
from tasks.reporting import invoking_command

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

    # The lever at the reference solutions: per-string χ, weights, and its linear check.
    lever = c["lever"]
    base_futures = {
        rule: [
            lever_baseline.submit(data, model, lever, baseline[s])
            for s in refs[rule][: cfg.lever_pairs]
        ]
        for rule in RULES
    }
    baselines = {rule: [f.result() for f in fs] for rule, fs in base_futures.items()}
    plan = lever_plan(
        data, baselines[NESTED], baselines[EQUAL_COUNT], list(cfg.lever.alphas), cfg.alpha
    )
    check_futures = {
        rule: [
            [
                lever_check.submit(
                    data, model, lever, baseline[b["seed"]], plan["weights"][str(a)], b, a
                )
                for a in cfg.lever.alphas
            ]
            for b in baselines[rule]
        ]
        for rule in (RULES if cfg.linear_check else ())
    }
    temperature_futures = [
        lever_temperature.submit(data, model, lever, baseline[b["seed"]], b)
        for rule in (RULES if cfg.linear_check else ())
        for b in baselines[rule]
    ]
    checks = {
        rule: [[f.result() for f in per] for per in rows] for rule, rows in check_futures.items()
    }
    temperature = [f.result() for f in temperature_futures]
    gate = lever_gate(linear_check_table(checks, cfg.lever.alphas) if checks else [])
    logger.info(describe_gate(gate))

    # Retrain every seed with the weights at the α fixed in the settings, only as allowed.
    after = analysis_after = None
    if should_retrain(cfg.retrain, gate):
        weights = plan["weights"][str(cfg.alpha)]
        weighted = {
            s: train_seed.submit(data, model, c["train"], s, WEIGHTED, weights) for s in seeds
        }
        after = classify_seeds(
            [weighted[s].result()["record"] for s in seeds], cfg.threshold, cfg.min_train_acc
        )
        # λ of the weighted loss at the first retrained solutions of each rule.
        futures = {
            rule: [
                analyze_solution.submit(data, model, c["sampler"], weighted[s], weights)
                for s in retrained
            ]
            for rule, retrained in retrained_references(after, cfg.analyzed_per_rule).items()
        }
        analysis_after = {rule: [f.result() for f in fs] for rule, fs in futures.items()}
    return parentheses_report(
        c,
        before,
        after,
        refs,
        baselines,
        plan,
        checks,
        analysis_after,
        temperature,
        out_dir,
        command=invoking_command(),
    )
