"""The spacing fin: tokens inside runs of spaces, spread along a χ mode by how far into
the run they are (the "spacing fin" of the embryology paper's susceptibility maps).

It needs a tokenizer that keeps a run of n spaces as n tokens (``{"source": "corpus",
"whitespace": "split"}``; the default byte-level BPE merges a run, and the indentation
after a newline, into one token, and the fin has nothing to live on).

Conventions. A χ unit (b, t) is the loss of predicting token t + 1 of probe sequence b
(``transformer.per_token_loss``), so a unit's *run position* is that of its target token:
k = 1 for the first space after a non-space token, 2 for the next, and so on; NaN when the
target is not a space, or when the run reaches back to the start of the sequence (its true
position is unknown there).

Fin metric (:func:`fin_metric`): over the space units, Spearman's ρ between run position
and each leading mode's unit loadings of the standardized χ (``estimators.chi_map``); the
*fin mode* is the mode with the largest |ρ| and the metric is that |ρ| (in [0, 1]; 1: the
mode orders the space tokens exactly by their depth in the run). The maximum over
``n_modes`` modes is biased upward under no structure: for m independent units its null
is about √(2 ln(2·n_modes)/m) (≈ 0.08 for 8 modes and 1,000 space units), which the report
quotes beside the value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.estimators.chi_map import coordinate_correlation

__all__ = ["SPACE", "fin_metric", "null_level", "run_positions"]

SPACE = " "


def run_positions(tokens: Tensor, strings: Sequence[str]) -> np.ndarray:
    """Run position of each unit's target token, ``float64 [B, T − 1]`` (see the module
    docstring; NaN where undefined). ``tokens``: ``int64 [B, T]``; ``strings``: the text of
    every token id."""
    ids = tokens.numpy()
    is_space = np.array([s == SPACE for s in strings])[ids]  # [B, T]
    t = np.arange(ids.shape[1])
    last_other = np.maximum.accumulate(np.where(is_space, -1, t), axis=1)  # −1: none yet
    position = np.where(is_space & (last_other >= 0), t - last_other, np.nan)
    return position[:, 1:]


def fin_metric(unit_loading: xr.DataArray, positions: np.ndarray) -> dict:
    """The fin mode and metric of one checkpoint.

    ``unit_loading``: ``(mode, unit)`` of the standardized χ (a readout's
    ``unit_loading``); ``positions``: run position per unit, flattened in the units' order
    (NaN outside runs). Returns ``{"mode", "rho" (signed, of the fin mode), "metric" (|ρ|),
    "per_mode" {mode: ρ}, "space_units", "null"}``.
    """
    pos = np.asarray(positions, dtype=np.float64).ravel()
    if pos.shape != (unit_loading.sizes["unit"],):
        raise ValueError(
            f"{pos.size} positions for {unit_loading.sizes['unit']} units: pass one per unit."
        )
    n_space = int(np.isfinite(pos).sum())
    if n_space < 3:
        raise ValueError(
            f"only {n_space} probe units predict a space inside a run: use probes from a corpus "
            "tokenized with whitespace='split'."
        )
    rho = coordinate_correlation(unit_loading, pos)
    values = np.nan_to_num(np.abs(rho.values), nan=-1.0)
    best = int(np.argmax(values))
    return {
        "mode": int(rho.mode.values[best]),
        "rho": float(rho.values[best]),
        "metric": float(abs(rho.values[best])),
        "per_mode": {int(m): float(r) for m, r in zip(rho.mode.values, rho.values, strict=True)},
        "space_units": n_space,
        "null": null_level(n_space, unit_loading.sizes["mode"]),
    }


def null_level(space_units: int, n_modes: int) -> float:
    """The typical largest |ρ| over ``n_modes`` unrelated modes: √(2 ln(2·n_modes)/m)."""
    return float(np.sqrt(2 * np.log(2 * n_modes) / space_units))
