"""Prefect tasks of the parentheses experiment (method.md §7), one per unit of work.

Each task loads its inputs, makes one call into ``patterning_core.experiments.parentheses``
(``steps`` has the units, ``report`` the rendering) and returns JSON or writes files:

- ``train-seed``: one seed under one condition (``baseline``: the plain loss; ``weighted``:
  the string weights ρ) → its record and the trained parameters (as JSON, exact);
- ``lever-baseline``: the unweighted lever run of one reference solution (per-string χ);
- ``lever-plan``: per-string weights at every α from the reference solutions' χ;
- ``lever-check``: measured against predicted Δλ at one reference solution and one α;
- ``lever-temperature``: the sampler's fluctuation–dissipation check for nβ at one solution;
- ``analyze-solution``: LLC of one (retrained) solution under the ρ-weighted loss;
- ``parentheses-report``: ``results.json``, ``report.md`` and the PNG plots in ``out_dir``.

Training and sampling are memoized on their inputs and source (``tasks.caching``), results
stored as JSON: a killed run, started again, trains and samples only the units it had not
finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from patterning_core.experiments.parentheses import report, steps
from patterning_core.experiments.parentheses.classifier import ParenModelConfig, ParenTrainConfig
from patterning_core.experiments.parentheses.config import ExperimentConfig, data_config
from patterning_core.experiments.parentheses.lever import LeverConfig
from patterning_core.sampling.sgld import SamplerConfig
from tasks.caching import expensive_task_policy, result_storage

MEMOIZED = {
    "cache_policy": expensive_task_policy(),
    "result_storage": result_storage(),
    "persist_result": True,
    "result_serializer": "json",  # never pickle
}


def _setup(data: dict[str, Any]) -> steps.Setup:
    torch.set_num_threads(1)  # tiny models: one thread each is fastest
    return steps.prepare(data_config(data))


@task(name="train-seed", task_run_name="train-seed-{condition}-{seed}", **MEMOIZED)
def train_seed(
    data: dict[str, Any],
    model: dict[str, Any],
    train: dict[str, Any],
    seed: int,
    condition: str = steps.BASELINE,
    weights: list[float] | None = None,
) -> dict[str, Any]:
    """Train one seed; ``{"seed", "condition", "record", "params"}`` (``steps.train_seed``).

    ``data``, ``model``, ``train``: the ``ExperimentConfig`` parts (``to_dict``); ``weights``:
    ρ per training string, given exactly when ``condition`` is ``weighted``.
    """
    if condition not in steps.CONDITIONS or (weights is None) != (condition == steps.BASELINE):
        given = "with" if weights is not None else "without"
        raise ValueError(
            f"condition must be {steps.BASELINE!r} (no weights) or {steps.WEIGHTED!r} (with "
            f"weights), got {condition!r} {given} weights."
        )
    record, params = steps.train_seed(
        _setup(data), ParenModelConfig(**model), ParenTrainConfig(**train), seed, weights
    )
    get_run_logger().info("[%s] %s", condition, steps.describe_seed(record))
    return {
        "seed": seed,
        "condition": condition,
        "record": record,
        "params": steps.params_to_json(params),
    }


@task(
    name="analyze-solution",
    task_run_name="analyze-solution-{solution[condition]}-{solution[seed]}",
    **MEMOIZED,
)
def analyze_solution(
    data: dict[str, Any],
    model: dict[str, Any],
    sampler: dict[str, Any],
    solution: dict[str, Any],
    weights: list[float] | None = None,
    chi_sampler: dict[str, Any] | None = None,
    probes_per_group: int | None = None,
) -> dict[str, Any]:
    """LLC of a ``train-seed`` solution under the ρ-weighted loss (``weights``; None: plain),
    and with ``chi_sampler`` its group χ (``steps.analyze_solution``)."""
    row = steps.analyze_solution(
        _setup(data),
        ParenModelConfig(**model),
        SamplerConfig.from_dict(sampler),
        solution["seed"],
        steps.params_from_json(solution["params"]),
        weights,
        chi_sampler=None if chi_sampler is None else SamplerConfig.from_dict(chi_sampler),
        probes_per_group=probes_per_group,
    )
    get_run_logger().info("[%s] %s", solution["condition"], steps.describe_analysis(row))
    return row


@task(
    name="lever-baseline",
    task_run_name="lever-baseline-{solution[seed]}",
    **MEMOIZED,
)
def lever_baseline(
    data: dict[str, Any], model: dict[str, Any], lever: dict[str, Any], solution: dict[str, Any]
) -> dict[str, Any]:
    """The unweighted lever run of one reference solution: per-string χ (direction and
    check chains), λ ± SE and health (``steps.lever_baseline``)."""
    row = steps.lever_baseline(
        _setup(data),
        ParenModelConfig(**model),
        LeverConfig.from_dict(lever),
        solution["seed"],
        steps.params_from_json(solution["params"]),
    )
    get_run_logger().info(steps.describe_baseline(row))
    return row


@task(name="lever-plan")
def lever_plan(
    data: dict[str, Any],
    nested_rows: list[dict[str, Any]],
    equal_rows: list[dict[str, Any]],
    alphas: list[float],
    retrain_alpha: float,
) -> dict[str, Any]:
    """Per-string weights at every α from the direction chains' χ (``steps.lever_plan``)."""
    return steps.lever_plan(_setup(data), nested_rows, equal_rows, alphas, retrain_alpha)


@task(
    name="lever-check",
    task_run_name="lever-check-{solution[seed]}-alpha{alpha}",
    **MEMOIZED,
)
def lever_check(
    data: dict[str, Any],
    model: dict[str, Any],
    lever: dict[str, Any],
    solution: dict[str, Any],
    weights: list[float],
    baseline: dict[str, Any],
    alpha: float,
) -> dict[str, Any]:
    """Measured against predicted Δλ at one reference solution and one α
    (``steps.lever_check``); ``baseline``: its ``lever-baseline`` result."""
    row = steps.lever_check(
        _setup(data),
        ParenModelConfig(**model),
        LeverConfig.from_dict(lever),
        steps.params_from_json(solution["params"]),
        weights,
        baseline,
        alpha,
    )
    get_run_logger().info(steps.describe_lever_check(row))
    return row


@task(
    name="lever-temperature",
    task_run_name="lever-temperature-{solution[seed]}",
    **MEMOIZED,
)
def lever_temperature(
    data: dict[str, Any],
    model: dict[str, Any],
    lever: dict[str, Any],
    solution: dict[str, Any],
    baseline: dict[str, Any],
) -> dict[str, Any]:
    """The sampler's fluctuation–dissipation check for nβ at one reference solution
    (``steps.lever_temperature``)."""
    return steps.lever_temperature(
        _setup(data),
        ParenModelConfig(**model),
        LeverConfig.from_dict(lever),
        steps.params_from_json(solution["params"]),
        baseline,
    )


@task(name="parentheses-report")
def parentheses_report(
    config: dict[str, Any],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]] | None,
    reference_seeds: dict[str, Any],
    baselines: dict[str, list[dict[str, Any]]],
    plan: dict[str, Any],
    checks: dict[str, list[list[dict[str, Any]]]],
    analysis_after: dict[str, list[dict[str, Any]]] | None,
    temperature: list[dict[str, Any]],
    out_dir: str,
    command: str | None = None,
) -> dict[str, Any]:
    """``results.json`` (``steps.assemble_result``), the plots and ``report.md`` in
    ``out_dir``; the report is also a Prefect artifact, and says ``command`` (the command
    line that ran the flow) when given. Returns a summary."""
    result = steps.assemble_result(
        ExperimentConfig.from_dict(config),
        before,
        after,
        reference_seeds,
        baselines,
        plan,
        checks,
        analysis_after,
        temperature,
    )
    if command:
        result["command"] = command
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    notes = [f"Written by the `parentheses` flow, run as `{command}`."] if command else []
    if (out / "diagnosis.md").is_file():
        notes.append(
            "Why, and what was tried: [diagnosis.md](diagnosis.md) (kept beside the report)."
        )
    text = report.markdown(result, report.plots(result, out), notes)
    path = out / "report.md"
    path.write_text(text)
    create_markdown_artifact(text, key="parentheses-report", description="parentheses experiment")
    return {
        "report": str(path),
        "result": str(out / "results.json"),
        "timing_s": result["timing_s"],
        "gate_passed": result["gate"]["passes"],
        "retrained": result["retrained"],
        "nested": [result["nested_before"], result["nested_after"]],
        "equal_count": [result["equal_count_before"], result["equal_count_after"]],
        "paired_sign_test_p": result["paired_sign_test_p"],
    }
