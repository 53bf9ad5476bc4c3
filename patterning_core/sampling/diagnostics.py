"""Convergence diagnostics for SGLD traces."""

from __future__ import annotations

import numpy as np


def split_rhat(trace: np.ndarray) -> float:
    """Split-R̂ (Gelman et al., BDA3 §11.4) of a ``[chain, draw]`` trace.

    Each chain is cut into halves, so one chain is enough for a value; ≈ 1 means the
    halves agree. Returns NaN with fewer than 4 draws or when every draw is identical.
    """
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2:
        raise ValueError(f"trace must be [chain, draw], got shape {trace.shape}.")
    half = trace.shape[1] // 2
    if half < 2:
        return float("nan")
    halves = np.concatenate([trace[:, :half], trace[:, -half:]], axis=0)
    within = halves.var(axis=1, ddof=1).mean()
    between = half * halves.mean(axis=1).var(ddof=1)
    if within == 0:
        return float("nan")
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))
