"""Prefect tasks of the induction-patterning experiment: the Induce/Repress weights from χ
(``patterning_core.experiments.induction.weights``) written as files, and the report
(``patterning_core.experiments.induction.report``) written as Markdown + PNGs and
published as Prefect artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from patterning_core.estimators.mode_weights import CONDITIONS
from patterning_core.experiments.induction.report import patterning_report
from patterning_core.experiments.induction.weights import induction_weights
from tasks.retraining import save_weights


@task(name="induction-patterning-weights")
def patterning_weights(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str,
    preset: str,
    data: dict,
    alpha: float,
    rcond: float,
    negative: str,
    out_dir: str,
) -> dict:
    """Induce/Repress weights for every training unit, written as ``.npy`` files.

    Head scores: prefix-matching scores at the reference run's last checkpoint. Returns
    ``{"files": {condition: {"path", "digest"}}, "summary", "per_chain_class_dh",
    "alignment_by_checkpoint", "scores_from", "reference_matches_store"}`` (JSON-able); the
    same is written to ``out_dir/weights.json``.
    """
    logger = get_run_logger()
    result = induction_weights(chi_store, chi_step, reference_run_dir, data, alpha, rcond, negative)
    if result.per_chain_error is not None:
        logger.warning("no per-chain check: %s", result.per_chain_error)
    files = {}
    for condition in CONDITIONS:
        path, digest = save_weights(result.weights[condition], Path(out_dir) / "weights")
        files[condition] = {"path": path, "digest": digest}
    info = {"files": files, **result.info}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    summary = info["summary"]
    logger.info(
        "χ at step %d: induction mode %d (alignment %+.3f), Induce sign %+d, class R² %.4f",
        chi_step,
        summary["mode"],
        summary["alignment"],
        summary["sign_induce"],
        summary["fit_r2"],
    )
    return info


@task(name="induction-patterning-report")
def write_patterning_report(out_dir: str, settings: dict, weights: dict, runs: list[dict]) -> dict:
    """``report.md`` with plots and ``results.json`` under ``out_dir``, published as Prefect
    artifacts.

    ``runs``: results of ``retrain_weighted`` with ``condition`` added. Returns
    ``{"report", "rows", "verdicts"}``.
    """
    out = Path(out_dir)
    report = patterning_report(out, settings, weights, runs)
    path = out / "report.md"
    path.write_text(report.text)
    (out / "results.json").write_text(
        json.dumps(
            {"settings": settings, "runs": runs, "verdicts": report.verdicts, "weights": weights},
            indent=2,
            default=str,
        )
    )
    create_markdown_artifact(
        markdown=report.text,
        key="induction-patterning-report",
        description="induction circuit: Induce / Repress",
    )
    create_table_artifact(
        table=report.rows,
        key="induction-patterning-runs",
        description="formation step and final validation loss per condition and seed",
    )
    return {"report": str(path), "rows": report.rows, "verdicts": report.verdicts}
