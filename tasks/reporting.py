"""Prefect task: the pipeline's Markdown report (``patterning_core.report.pipeline_report``),
written as ``report.md`` and published as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from patterning_core.report.pipeline_report import pipeline_report


@task(name="write-report")
def write_report(
    out_dir: str,
    settings: dict,
    training: dict | None,
    induction: dict | None,
    chi_summary: dict,
    decompositions: list[dict],
) -> str:
    """Write ``report.md`` beside the plots; publish it and the summary table as artifacts."""
    out = Path(out_dir)
    report = pipeline_report(out, settings, training, induction, chi_summary, decompositions)
    path = out / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.text)
    create_markdown_artifact(
        markdown=report.text, key="pipeline-report", description="patterning pipeline report"
    )
    if report.rows:
        create_table_artifact(
            table=report.rows,
            key="chi-summary",
            description="χ and its explained variance per checkpoint",
        )
    return str(path)
