"""The ``pipeline`` flow's report: settings, training, the induction curve, and χ with its
modes per checkpoint, as Markdown linking the plots the flow drew.

Inputs are the flow's task results: ``training`` (``{"run_dir", "checkpoints"}``),
``induction`` (``{"steps", "best", "chance", "threshold", "formation_step", "png"}``),
``chi_summary`` (``{"store", "computed", "already_complete", "checkpoints": [{"step",
"mean", "std"}]}``) and one decomposition summary per checkpoint (``{"step",
"explained_variance", "component_loadings", "top_units", "files"}``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from patterning_core.report.markdown import markdown_table


@dataclass
class PipelineReport:
    """``text``: the Markdown of ``report.md``; ``rows``: :func:`summary_rows`."""

    text: str
    rows: list[dict]


def _rel(path: str | os.PathLike[str], base: Path) -> str:
    return os.path.relpath(path, base)


def summary_rows(decompositions: list[dict], chi_stats: list[dict]) -> list[dict]:
    """One row per checkpoint: χ's mean and standard deviation, and the explained variance
    of its first three modes."""
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


def pipeline_report(
    out_dir: str | os.PathLike[str],
    settings: dict,
    training: dict | None,
    induction: dict | None,
    chi_summary: dict,
    decompositions: list[dict],
) -> PipelineReport:
    """The report's Markdown (links relative to ``out_dir``) and its χ summary rows."""
    out = Path(out_dir)
    rows = summary_rows(decompositions, chi_summary["checkpoints"])
    lines = ["# patterning pipeline report", ""]
    settings_json = json.dumps(settings, indent=2, sort_keys=True, default=str)
    lines += ["## Settings", "", "```json", settings_json, "```", ""]
    if training:
        lines += [
            "## Training",
            "",
            f"Run directory `{training['run_dir']}`, {len(training['checkpoints'])} checkpoints.",
            "",
        ]
        loss_png = Path(training["run_dir"]) / "loss.png"
        if loss_png.exists():
            lines += [f"![training loss]({_rel(loss_png, out)})", ""]
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
    if rows:
        lines += [*markdown_table(rows), ""]
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
    return PipelineReport(text="\n".join(lines), rows=rows)
