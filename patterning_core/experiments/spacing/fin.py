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

Loss-controlled reading (``control`` in :func:`fin_metric`): a unit's susceptibilities
scale with how well it is predicted, and how well a space is predicted changes along its
run, so run position can order the loadings through the loss level alone. The partial
Spearman ρ of run position and loadings given the unit's posterior mean loss (ranks of
both regressed on the rank of the loss) removes that path; ``partial_metric`` is its
largest |ρ| over the modes.
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


def partial_spearman(x: np.ndarray, y: np.ndarray, control: np.ndarray) -> float:
    """Spearman's ρ of ``x`` and ``y`` given ``control``: the correlation of their ranks'
    residuals after a least-squares fit on the rank of ``control``."""
    from scipy.stats import rankdata

    basis = np.c_[np.ones(len(control)), rankdata(control)]

    def residual(v: np.ndarray) -> np.ndarray:
        r = rankdata(v)
        return r - basis @ np.linalg.lstsq(basis, r, rcond=None)[0]

    ex, ey = residual(x), residual(y)
    denom = float(np.sqrt((ex @ ex) * (ey @ ey)))
    return float(ex @ ey / denom) if denom > 0 else float("nan")


def fin_metric(
    unit_loading: xr.DataArray, positions: np.ndarray, control: np.ndarray | None = None
) -> dict:
    """The fin mode and metric of one checkpoint.

    ``unit_loading``: ``(mode, unit)`` of the standardized χ (a readout's
    ``unit_loading``); ``positions``: run position per unit, flattened in the units' order
    (NaN outside runs); ``control``: a per-unit value to control for (the posterior mean
    loss), or None. Returns ``{"mode", "rho" (signed, of the fin mode), "metric" (|ρ|),
    "per_mode" {mode: ρ}, "space_units", "null"}``, and with ``control`` also
    ``"partial_per_mode"``, ``"partial_mode"``, ``"partial_metric"`` and
    ``"control_rho"`` (Spearman ρ of position and the control itself).
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
    result = {
        "mode": int(rho.mode.values[best]),
        "rho": float(rho.values[best]),
        "metric": float(abs(rho.values[best])),
        "per_mode": {int(m): float(r) for m, r in zip(rho.mode.values, rho.values, strict=True)},
        "space_units": n_space,
        "null": null_level(n_space, unit_loading.sizes["mode"]),
    }
    if control is not None:
        from scipy.stats import spearmanr

        keep = np.isfinite(pos)
        c = np.asarray(control, dtype=np.float64).ravel()[keep]
        loadings = unit_loading.transpose("mode", "unit").values[:, keep]
        partial = {
            int(m): partial_spearman(pos[keep], row, c)
            for m, row in zip(unit_loading.mode.values, loadings, strict=True)
        }
        top = max(partial, key=lambda m: np.nan_to_num(abs(partial[m]), nan=-1.0))
        result.update(
            partial_per_mode=partial,
            partial_mode=top,
            partial_metric=float(abs(partial[top])),
            control_rho=float(spearmanr(pos[keep], c)[0]),
        )
    return result


def null_level(space_units: int, n_modes: int) -> float:
    """The typical largest |ρ| over ``n_modes`` unrelated modes: √(2 ln(2·n_modes)/m)."""
    return float(np.sqrt(2 * np.log(2 * n_modes) / space_units))
