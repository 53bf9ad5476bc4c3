"""Plots for reports (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
