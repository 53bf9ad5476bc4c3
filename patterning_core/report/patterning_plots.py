"""Plots of a patterning experiment (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from patterning_core.report.pyplot import plt, save_figure

CONDITION_COLORS = {"baseline": "k", "induce": "tab:blue", "repress": "tab:red"}
SEED_STYLES = ("-", "--", ":", "-.")


def plot_condition_curves(
    runs: Sequence[Mapping],
    path: str | os.PathLike[str],
    x: str = "steps",
    y: str = "best",
    ylabel: str = "best layer-1 prefix-matching score",
    threshold: float | None = None,
    chance: float | None = None,
    title: str = "",
) -> Path:
    """One line per run (colour: ``run["condition"]``, line style: seed), with optional
    threshold and chance lines. Each run holds the sequences ``run[x]`` and ``run[y]``."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    seeds = sorted({int(r["seed"]) for r in runs})
    for run in runs:
        style = SEED_STYLES[seeds.index(int(run["seed"])) % len(SEED_STYLES)]
        color = CONDITION_COLORS.get(run["condition"], "tab:gray")
        ax.plot(
            run[x],
            run[y],
            style,
            color=color,
            marker="o",
            ms=2.5,
            lw=1.3,
            label=f"{run['condition']} seed {run['seed']}",
        )
    if threshold is not None:
        ax.axhline(threshold, color="tab:gray", ls="--", lw=1, label=f"threshold {threshold}")
    if chance is not None:
        ax.axhline(chance, color="tab:gray", ls=":", lw=1, label=f"chance {chance:.3f}")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_class_weights(
    conditions: Mapping[str, Mapping[str, float]],
    fractions: Mapping[str, float],
    path: str | os.PathLike[str],
    title: str = "training weight ρ per pattern class",
) -> Path:
    """Grouped bars: ρ of each class (x) per condition (colour); the uniform baseline is 1.
    Class labels carry their share of the training units."""
    classes = [c for c in fractions if fractions[c] > 0]
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * len(classes), 3.6))
    width = 0.8 / max(len(conditions), 1)
    for i, (name, weights) in enumerate(conditions.items()):
        xs = [k + (i - (len(conditions) - 1) / 2) * width for k in range(len(classes))]
        ax.bar(
            xs,
            [weights.get(c, 0.0) for c in classes],
            width,
            color=CONDITION_COLORS.get(name, "tab:gray"),
            label=name,
        )
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="baseline (uniform)")
    ax.set_xticks(range(len(classes)), [f"{c}\n({fractions[c]:.1%})" for c in classes])
    ax.set_ylabel("ρ (mean over training units = 1)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
