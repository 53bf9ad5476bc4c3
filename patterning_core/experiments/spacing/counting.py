"""Does a model count a run of spaces? Its per-token loss on outline text
(``data/outline.py``) at the two predictions that need the count:

- the marker after a run of d spaces (the marker names d exactly: ``outline.MARKERS[d]``);
- a space that continues a run after k spaces (does the run go on?).

A model that counts predicts markers far below ln(12) ≈ 2.48 nats (a guess among the 12
markers) at every depth; one that does not sits near it, or learns only the shallow ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from patterning_core.data.outline import MARKERS

__all__ = ["counting_losses", "counting_targets", "run_lengths"]


def run_lengths(tokens: np.ndarray, space: int) -> np.ndarray:
    """Per token ``[B, T]``: how many spaces directly precede it (0 after a non-space; runs
    reaching back to the start of the sequence: -1, left out)."""
    out = np.zeros_like(tokens)
    for b, row in enumerate(tokens):
        count, known = 0, False
        for t, token in enumerate(row):
            out[b, t] = count if known else -1
            if token == space:
                count += 1
            else:
                count, known = 0, True
    return out


def counting_targets(tokens: np.ndarray, strings: Sequence[str]) -> dict[str, np.ndarray]:
    """The loss units ``[B, T − 1]`` (target ``tokens[:, 1:]``) that need the count:
    ``before`` (spaces right before the target, -1 unknown), ``depth`` (the marker's depth,
    -1 for a non-marker), ``marker`` (a marker right after a run of its own depth) and
    ``in_run`` (a space continuing a run)."""
    space = list(strings).index(" ")
    marker_ids = {list(strings).index(m): d for d, m in enumerate(MARKERS)}
    before = run_lengths(tokens, space)[:, 1:]
    targets = tokens[:, 1:]
    depth = np.vectorize(lambda t: marker_ids.get(int(t), -1), otypes=[np.int64])(targets)
    return {
        "before": before,
        "depth": depth,
        "marker": (depth >= 0) & (before == depth),
        "in_run": (targets == space) & (before >= 1),
    }


def counting_losses(loss: np.ndarray, targets: dict[str, np.ndarray]) -> dict:
    """Mean loss (nats) of the counting units: ``{"marker": {d: [mean, count]}, "space": {k:
    [mean, count]}, "marker_all", "space_all", "space_after_1_2", "space_after_3_plus"}``
    (``marker_all``: markers of depth ≥ 1; the last two: spaces that continue a run after
    1–2 and after 3–11 spaces, NaN where there is none).
    ``loss``: per-unit loss ``[B, T − 1]``; ``targets``: :func:`counting_targets`."""
    before, depth = targets["before"], targets["depth"]
    is_marker, in_run = targets["marker"], targets["in_run"]
    row: dict = {"marker": {}, "space": {}}
    for d in range(1, len(MARKERS)):
        sel = is_marker & (depth == d)
        if sel.sum():
            row["marker"][d] = [float(loss[sel].mean()), int(sel.sum())]
    for k in range(1, len(MARKERS)):
        sel = in_run & (before == k)
        if sel.sum():
            row["space"][k] = [float(loss[sel].mean()), int(sel.sum())]
    row["marker_all"] = float(loss[is_marker & (depth >= 1)].mean())
    row["space_all"] = float(loss[in_run].mean())
    shallow = in_run & (before >= 1) & (before <= 2)
    deep = in_run & (before >= 3) & (before < len(MARKERS))
    row["space_after_1_2"] = float(loss[shallow].mean()) if shallow.any() else float("nan")
    row["space_after_3_plus"] = float(loss[deep].mean()) if deep.any() else float("nan")
    return row
