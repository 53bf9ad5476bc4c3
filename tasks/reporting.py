"""Prefect task: the pipeline's Markdown report, also published as Prefect artifacts."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact


def _rel(path: str, base: Path) -> str:
    return os.path.relpath(path, base)


def summary_rows(decompositions: list[dict], chi_stats: list[dict]) -> list[dict]:
    stats = {s["step"]: s for s in chi_stats}
    rows = []
    for d in decompositions:
        s = stats.get(d["step"], {})
        ev = d["explained_variance"]
        rows.append(
            {
                "checkpoint": d["step"],
                "χ mean": f"{s.get('mean', float('nan')):+.2e}",
                "χ std": f"{s.get('std', float('nan')):.2e}",
                "PC1": f"{ev[0]:.1%}",
                "PC2": f"{ev[1]:.1%}" if len(ev) > 1 else "",
                "PC3": f"{ev[2]:.1%}" if len(ev) > 2 else "",
            }
        )
    return rows


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
    rows = summary_rows(decompositions, chi_summary["checkpoints"])
    lines = ["# patterning pipeline report", ""]
    lines += ["## Settings", "", "```json", _json(settings), "```", ""]
    if training:
        lines += [
            "## Training",
            "",
            f"Run directory `{training['run_dir']}`, {len(training['checkpoints'])} checkpoints.",
            "",
        ]
        loss_png = Path(training["run_dir"]) / "loss.png"
        if loss_png.exists():
            lines += [f"![training loss]({_rel(str(loss_png), out)})", ""]
    if induction:
        formed = induction["formation_step"]
        lines += [
            "## Induction",
            "",
            f"Best layer-1 prefix-matching score per checkpoint (chance "
            f"{induction['chance']:.3f}, threshold {induction['threshold']}): "
            + ", ".join(
                f"{s}: {v:.3f}" for s, v in zip(induction["steps"], induction["best"], strict=True)
            ),
            "",
            f"Formation step: {formed if formed is not None else 'not formed'}.",
            "",
        ]
        if induction.get("png"):
            lines += [f"![prefix matching]({_rel(induction['png'], out)})", ""]
    lines += [
        "## Susceptibilities",
        "",
        f"χ store `{chi_summary['store']}`: {chi_summary['computed']} shards computed "
        f"this run, {chi_summary['already_complete']} already complete.",
        "",
    ]
    header = list(rows[0]) if rows else []
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
        lines += [""]
    for d in decompositions:
        lines += [
            f"### Checkpoint {d['step']}",
            "",
            f"![χ]({_rel(d['files']['chi_png'], out)})",
            "",
            f"![modes]({_rel(d['files']['modes_png'], out)})",
            "",
        ]
        for mode, units in d["top_units"].items():
            loadings = d["component_loadings"][mode]
            top_comps = sorted(loadings, key=lambda c: -abs(loadings[c]))[:4]
            tokens = ", ".join(
                f"`{u.get('token_text', u['unit'])!s}` ({u.get('pattern_class', '')})"
                for u in units[:6]
            )
            comps = ", ".join(f"{c} {loadings[c]:+.2f}" for c in top_comps)
            lines.append(f"- PC{mode}: components {comps}; top units {tokens}")
        lines.append("")
    text = "\n".join(lines)
    path = out / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    create_markdown_artifact(
        markdown=text, key="pipeline-report", description="patterning pipeline report"
    )
    if rows:
        create_table_artifact(
            table=rows, key="chi-summary", description="χ and its explained variance per checkpoint"
        )
    return str(path)


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str)
