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

Position beyond the loss (:func:`position_decoding`): the fin metric reads one mode at a
time; the decoding asks the whole susceptibility vector. Over the space units, a ridge
regression predicts the rank of the run position from each unit's *direction* in χ space
(its standardized χ column scaled to unit length, so that its size, which follows the
loss, carries nothing), from the rank of its posterior mean loss alone, and from both;
out-of-fold predictions (K folds, seeded) are scored by Spearman's ρ with the position.
``beyond_loss`` = ρ(both) − ρ(loss): how much run position the χ directions hold that the
loss level does not. A fin that counts spaces shows up there; an ordering that only
follows how hard a space is to predict does not.

Position beyond the initialization (``baseline`` in :func:`position_decoding`): an
untrained network already orders the spaces of a run (its attention averages over a
context that holds more spaces the deeper the run is), so a fin read off χ of a trained
model is learned only where it holds more than χ of its initialization on the same probe
units. With the initialization's standardized χ given, the decoding also predicts the
position from the initialization's directions with the loss (``from_init``), and from the
trained model's directions, the initialization's and the loss together (``from_all``);
``beyond_init`` = ρ(all) − ρ(init): the run position only the trained model's χ holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.estimators.chi_map import coordinate_correlation

__all__ = ["SPACE", "fin_metric", "null_level", "position_decoding", "run_positions"]

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


def _out_of_fold_ridge(
    features: np.ndarray, target: np.ndarray, folds: int, ridge: float, seed: int
) -> np.ndarray:
    """Out-of-fold predictions of ``target [m]`` from ``features [m, f]`` (with an
    intercept; features centred and scaled on each training fold)."""
    order = np.random.default_rng(seed).permutation(len(target))
    prediction = np.empty(len(target))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        mean, std = features[train].mean(0), features[train].std(0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (features[train] - mean) / std, (features[test] - mean) / std
        y_mean = target[train].mean()
        gram = x_train.T @ x_train + ridge * np.eye(x_train.shape[1])
        coef = np.linalg.solve(gram, x_train.T @ (target[train] - y_mean))
        prediction[test] = y_mean + x_test @ coef
    return prediction


def position_decoding(
    standardized: np.ndarray,
    positions: np.ndarray,
    loss: np.ndarray,
    folds: int = 5,
    ridge: float = 1.0,
    seed: int = 0,
    baseline: np.ndarray | None = None,
) -> dict:
    """How well run position is predicted, out of fold, from the χ directions, the loss, and
    both (see the module docstring).

    ``standardized``: ``[component, unit]`` standardized χ; ``positions`` and ``loss``:
    ``[unit]`` (NaN positions outside runs are left out). Returns ``{"from_chi",
    "from_loss", "from_both", "beyond_loss", "space_units", "folds"}``, each ``from_*`` a
    Spearman ρ of out-of-fold predictions with the position. ``baseline``: the
    initialization's standardized χ over the same units (``[component', unit]``, any
    components); adds ``from_init``, ``from_all`` and ``beyond_init``.
    """
    from scipy.stats import rankdata, spearmanr

    pos = np.asarray(positions, dtype=np.float64).ravel()
    keep = np.isfinite(pos)
    if int(keep.sum()) < 2 * folds:
        raise ValueError(f"{int(keep.sum())} space units: need at least {2 * folds} to decode.")
    columns = np.asarray(standardized, dtype=np.float64)[:, keep]
    direction = _directions(columns)  # [m, component]
    level = rankdata(np.asarray(loss, dtype=np.float64).ravel()[keep])[:, None]
    target = rankdata(pos[keep])

    def score(features: np.ndarray) -> float:
        prediction = _out_of_fold_ridge(features, target, folds, ridge, seed)
        return float(spearmanr(prediction, target)[0])

    from_chi, from_loss = score(direction), score(level)
    from_both = score(np.c_[direction, level])
    decoded = {
        "from_chi": from_chi,
        "from_loss": from_loss,
        "from_both": from_both,
        "beyond_loss": from_both - from_loss,
        "space_units": int(keep.sum()),
        "folds": folds,
    }
    if baseline is not None:
        base = np.asarray(baseline, dtype=np.float64)
        if base.shape[-1] != pos.size:
            raise ValueError(
                f"the initialization's χ covers {base.shape[-1]} units, this χ {pos.size}: "
                "both must be estimated on the same probe units."
            )
        init_direction = _directions(base[:, keep])
        from_init = score(np.c_[init_direction, level])
        from_all = score(np.c_[direction, init_direction, level])
        decoded |= {
            "from_init": from_init,
            "from_all": from_all,
            "beyond_init": from_all - from_init,
        }
    return decoded


def _directions(columns: np.ndarray) -> np.ndarray:
    """``[unit, component]``: each unit's column of ``columns [component, unit]`` scaled to
    unit length (a zero column stays zero)."""
    norms = np.linalg.norm(columns, axis=0)
    return (columns / np.where(norms > 0, norms, 1.0)).T
