"""The toy model of superposition as it is always drawn: the columns of W as arrows in the
two-dimensional hidden plane, the represented ones joined in angular order (the k-gon)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from patterning_core.report.pyplot import plt, save_figure

__all__ = ["plot_fractions", "plot_polygons"]

METHOD_COLORS = {"baseline": "0.45", "chi": "C0", "control": "C1", "naive": "C2"}


def plot_polygons(
    panels: Mapping[str, Sequence[tuple[np.ndarray, str]]],
    path: str | os.PathLike[str],
    target: int | None = None,
    threshold: float = 0.5,
    title: str = "",
) -> Path:
    """One row per condition, one panel per model: ``panels = {condition: [(W [2, n],
    label), ...]}``. Feature i is drawn in colour Ci; ``target`` is drawn thick; columns
    with norm ≤ ``threshold`` (dropped) are drawn faint."""
    rows = len(panels)
    cols = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.3 * rows), squeeze=False)
    for r, (condition, models) in enumerate(panels.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xlim(-1.35, 1.35)
            ax.set_ylim(-1.35, 1.35)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(models):
                ax.axis("off")
                continue
            W, label = models[c]
            W = np.asarray(W)
            norms = np.linalg.norm(W, axis=0)
            kept = [i for i in range(W.shape[1]) if norms[i] > threshold]
            if len(kept) >= 2:
                order = sorted(kept, key=lambda i: math.atan2(W[1, i], W[0, i]))
                loop = [*order, order[0]]
                ax.plot(W[0, loop], W[1, loop], "-", color="0.6", lw=1)
            for i in range(W.shape[1]):
                strong = norms[i] > threshold
                ax.annotate(
                    "",
                    xy=(W[0, i], W[1, i]),
                    xytext=(0, 0),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": f"C{i}",
                        "lw": 2.6 if i == target else 1.2,
                        "alpha": 1.0 if strong else 0.35,
                    },
                )
                if strong:
                    ax.text(1.12 * W[0, i], 1.12 * W[1, i], str(i), fontsize=7, ha="center")
            ax.set_title(label, fontsize=7)
            if c == 0:
                ax.set_ylabel(condition, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_fractions(
    bars: Sequence[Mapping[str, object]],
    curves: Mapping[str, Sequence[tuple[float, float, float, float]]],
    baseline: tuple[float, float, float],
    path: str | os.PathLike[str],
    ylabel: str = "fraction of seeds reaching the target",
) -> Path:
    """Left: bars ``{"name", "fraction", "low", "high"}`` with their intervals. Right:
    fraction against dose, ``curves = {name: [(dose, fraction, low, high), ...]}``, with the
    baseline ``(fraction, low, high)`` as a band."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [str(b["name"]) for b in bars]
    fractions = np.array([float(b["fraction"]) for b in bars])
    low = np.array([float(b["low"]) for b in bars])
    high = np.array([float(b["high"]) for b in bars])
    colors = [METHOD_COLORS.get(name, f"C{3 + i}") for i, name in enumerate(names)]
    left.bar(names, fractions, color=colors, alpha=0.8)
    left.errorbar(names, fractions, yerr=[fractions - low, high - fractions], fmt="none", c="k")
    left.set_ylim(0, 1.05)
    left.set_ylabel(ylabel)
    left.set_title("conditions (95 % Wilson intervals)")
    right.axhspan(baseline[1], baseline[2], color="0.85", label="baseline 95 %")
    right.axhline(baseline[0], color="k", lw=1)
    for name, points in curves.items():
        pts = sorted(points)
        d = [p[0] for p in pts]
        f = np.array([p[1] for p in pts])
        lo = np.array([p[2] for p in pts])
        hi = np.array([p[3] for p in pts])
        right.errorbar(
            d,
            f,
            yerr=[f - lo, hi - f],
            fmt="o-",
            capsize=3,
            label=name,
            color=METHOD_COLORS.get(name),
        )
    right.set_xlabel("dose mean|ρ − 1|")
    right.set_ylim(0, 1.05)
    right.set_title("fraction against dose")
    right.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
