"""Prefect tasks of the spacing experiment: weights along the χ mode of the whitespace
heads (``patterning_core.experiments.spacing.weights``) written as files, the measures of
a retrained run (``...spacing.science.run_measures``), and the report
(``...spacing.report``: Markdown + PNG, also a Prefect artifact). The flow is
``flows/spacing.py``."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from patterning_core.experiments.spacing.report import spacing_report
from patterning_core.experiments.spacing.science import run_measures
from patterning_core.experiments.spacing.weights import CONDITION_OF
from patterning_core.experiments.spacing.weights import spacing_weights as compute_weights
from tasks.retraining import save_weights


@task(name="spacing-weights")
def spacing_weights(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str,
    data: dict,
    alpha: float,
    eval_seqs: int,
    out_dir: str,
) -> dict:
    """Amplify/Suppress weights for every training unit, written as ``.npy`` files.

    Returns (and writes to ``out_dir/weights.json``) ``{"files": {"induce"|"repress":
    {"path", "digest"}}, "spacing": {...numbers for the report}}``.
    """
    result = compute_weights(chi_store, chi_step, reference_run_dir, data, alpha, eval_seqs)
    files = {}
    for key in CONDITION_OF:
        path, digest = save_weights(result.weights[key], Path(out_dir) / "weights")
        files[key] = {"path": path, "digest": digest}
    info = {"files": files, "spacing": result.spacing}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=float))
    s = result.spacing
    get_run_logger().info(
        "χ at step %d: spacing mode %d (whitespace correlation %+.2f), class R² %.3f",
        chi_step,
        s["mode"],
        s["whitespace_correlation"][s["mode"]],
        s["patterning"]["fit_r2"],
    )
    return info


@task(name="spacing-measures")
def spacing_measures(run_dir: str, data: dict, eval_seqs: int, curve_every: int = 500) -> dict:
    """Validation loss on whitespace and other targets (final, and every ``curve_every``
    steps) and the heads' spacing scores at the last checkpoint of ``run_dir``."""
    return run_measures(run_dir, data, eval_seqs, curve_every)


@task(name="spacing-report")
def write_spacing_report(out_dir: str, numbers: dict) -> dict:
    """``spacing.md``, ``spacing.png`` and ``spacing.json`` in ``out_dir``; the Markdown is
    also published as a Prefect artifact. Returns ``{"report", "rows"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spacing.json").write_text(json.dumps(numbers, indent=1, default=float))
    report = spacing_report(out, numbers)
    (out / "spacing.md").write_text(report.text)
    create_markdown_artifact(
        key="spacing-report", markdown=report.text, description="spacing experiment"
    )
    return {"report": str(out / "spacing.md"), "rows": report.rows}
