"""Controls at the same dose (natural-text induction demonstration).

A control separates "χ steered it" from "re-weighting these tokens by this much moves
induction anyway". Both keep the dose, the top/bottom-decile weight ratio
(``estimators.feature_extrapolation.decile_ratio``):

- :func:`random_mode_target`: a target dμ along a random direction of the space of the
  leading modes' component loadings, orthogonal to the induction mode; solved and
  extrapolated exactly as Induce is, then given the α that reaches the same ratio.
- :func:`shuffle_within_classes`: the Induce weights permuted across the training units of
  each pattern class. The multiset of weights is unchanged (the same ratio, exactly), and
  so is each class's total weight, so whatever class re-weighting does is kept and only
  χ's per-token information is destroyed.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def random_mode_target(
    modes: xr.Dataset, induction_mode: int, n_leading: int = 8, seed: int = 0
) -> np.ndarray:
    """``[components]`` unit vector: a Gaussian combination of the component loadings of the
    leading ``n_leading`` modes other than ``induction_mode`` (orthogonal to it, since the
    loadings are orthonormal)."""
    k = min(n_leading, modes.sizes["mode"])
    others = [int(m) for m in modes.mode.values[:k] if int(m) != induction_mode]
    if not others:
        raise ValueError("no leading mode other than the induction mode to draw from.")
    loadings = modes["component_loading"].sel(mode=others).values  # [modes, components]
    coef = np.random.default_rng(seed).standard_normal(len(others))
    target = coef @ loadings
    return target / np.linalg.norm(target)


def shuffle_within_classes(weights: np.ndarray, codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """``weights`` (any shape) permuted among the entries with the same ``codes`` value."""
    w = np.asarray(weights)
    c = np.asarray(codes)
    if w.shape != c.shape:
        raise ValueError(f"weights {w.shape} and class codes {c.shape} differ in shape.")
    flat_w, flat_c = w.ravel(), c.ravel()
    out = flat_w.copy()
    rng = np.random.default_rng(seed)
    for code in np.unique(flat_c):
        idx = np.flatnonzero(flat_c == code)
        out[idx] = flat_w[rng.permutation(idx)]
    return out.reshape(w.shape)
