"""Prefect task: the induction curve of a training run (best layer-1 prefix-matching score
per checkpoint, ``patterning_core.experiments.induction.metrics``) with its plot."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from patterning_core.experiments.induction.metrics import FORMATION_THRESHOLD, induction_curve
from patterning_core.report.plots import plot_prefix_matching


@task(name="induction-curve")
def induction_summary(run_dir: str, out_dir: str) -> dict | None:
    """Prefix-matching scores over the run's checkpoints, with ``out_dir/prefix_matching.png``.

    Returns ``{"steps", "best", "chance", "threshold", "formation_step", "png"}``.
    """
    curve = induction_curve(run_dir)
    png = plot_prefix_matching(
        curve.steps,
        curve.best,
        Path(out_dir) / "prefix_matching.png",
        threshold=curve.threshold,
        chance=curve.chance,
    )
    return {
        "steps": curve.steps,
        "best": curve.best,
        "chance": curve.chance,
        "threshold": FORMATION_THRESHOLD,
        "formation_step": curve.formation_step,
        "png": str(png),
    }
