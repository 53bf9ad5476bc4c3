"""Plots for reports (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from patterning_core.estimators.linear_response import ResponsePoint
from patterning_core.report.pyplot import plt, save_figure


def _smooth(values: Sequence[float], window: int) -> list[float]:
    if window <= 1:
        return list(values)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    path: str | os.PathLike[str],
    val_steps: Sequence[int] = (),
    val_losses: Sequence[float] = (),
    marker_step: int | None = None,
    title: str = "training loss",
    smooth: int | None = None,
) -> Path:
    """Training loss per step (raw, faint, and a running mean), optional validation points and
    a vertical line at ``marker_step`` (e.g. the induction formation step)."""
    window = smooth if smooth is not None else max(1, len(losses) // 100)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="train (per step)")
    ax.plot(
        steps, _smooth(losses, window), color="tab:blue", lw=1.5, label=f"train (mean of {window})"
    )
    if len(val_steps):
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", ms=3, label="validation")
    if marker_step is not None:
        ax.axvline(marker_step, color="k", ls="--", lw=1, label=f"induction forms ({marker_step})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_prefix_matching(
    steps: Sequence[int],
    scores: Sequence[float],
    path: str | os.PathLike[str],
    threshold: float | None = None,
    chance: float | None = None,
    per_head: dict[str, Sequence[float]] | None = None,
    title: str = "best layer-1 prefix-matching score",
) -> Path:
    """Prefix-matching score over checkpoints, with threshold and chance lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in (per_head or {}).items():
        ax.plot(steps, values, lw=0.8, alpha=0.5, label=name)
    ax.plot(steps, scores, "o-", color="k", ms=3, lw=1.5, label="best layer-1 head")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold}")
    if chance is not None:
        ax.axhline(chance, color="tab:gray", ls=":", lw=1, label=f"chance {chance:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("prefix-matching score")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_head_scores(
    steps: Sequence[int],
    per_head: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    ylabel: str,
    title: str,
    threshold: float | None = None,
    marks: Sequence[int] = (),
) -> Path:
    """One line per head of a score over checkpoints (e.g. every layer-1 head's prefix
    matching), with an optional threshold line and vertical lines at ``marks`` (e.g. the
    checkpoints where χ was estimated)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in per_head.items():
        ax.plot(steps, values, lw=1.2, label=name)
    for i, step in enumerate(marks):
        ax.axvline(step, color="tab:gray", ls=":", lw=1, label="χ checkpoint" if i == 0 else None)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_linear_response(
    points: Sequence[ResponsePoint],
    path: str | os.PathLike[str],
    title: str = "linear response",
    references: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """Measured against predicted change of ⟨φ⟩ over α; ``references = {label: (alphas,
    changes)}`` adds curves known otherwise (e.g. the exact change of a Gaussian posterior)."""
    alphas = [p.alpha for p in points]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(alphas, [p.predicted for p in points], "k--", label="predicted nβ·χ·dh")
    ax.errorbar(
        alphas,
        [p.measured for p in points],
        yerr=[2 * p.measured_se for p in points],
        fmt="o-",
        label="measured (±2 SE)",
    )
    for label, (xs, ys) in (references or {}).items():
        ax.plot(xs, ys, "-", alpha=0.7, label=label)
    ax.set_xlabel("re-weighting strength α")
    ax.set_ylabel("change of ⟨φ⟩")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
