"""Reports as files and Prefect artifacts: the pipeline's Markdown report
(``patterning_core.report.pipeline_report``) and, for the experiment flows, ``results.json``
with ``report.md`` beside it (:func:`publish_report`)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
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


def invoking_command() -> str:
    """The command line of this process (``patterning induce --config …`` when a
    ``patterning`` command runs the flow), for a report to say what wrote it."""
    if Path(sys.argv[0]).name == "patterning":
        return shlex.join(["patterning", *sys.argv[1:]])
    return shlex.join(sys.argv)


def publish_report(
    out_dir: str, numbers: dict, render: Callable[[Path, dict], str], key: str, description: str
) -> dict:
    """``results.json`` (``numbers``) and ``report.md`` (``render(out, numbers)``, which may
    write its figures into ``out``) in ``out_dir``; the Markdown also as the Prefect
    artifact ``key``. Returns ``{"report", "results"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(numbers, indent=1, default=float))
    text = render(out, numbers)
    (out / "report.md").write_text(text)
    create_markdown_artifact(key=key, markdown=text, description=description)
    return {"report": str(out / "report.md"), "results": str(out / "results.json")}
