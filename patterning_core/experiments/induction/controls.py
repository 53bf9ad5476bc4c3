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
- the same permutation within finer cells (:func:`cell_codes`): pattern class × sequence
  kind (synthetic or natural; the ``induction`` class is the tokens copying predicts). Each
  cell keeps its total weight, so what is left for χ is the detail beyond "which class, in
  which kind of sequence".

And the design that control b asks for: :func:`class_neutral`, weights whose every pattern
class keeps mean weight 1, so that a class shuffle of them is no class re-weighting at all
and whatever they do comes from their order within the classes.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from patterning_core.estimators.feature_extrapolation import decile_ratio


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


def cell_codes(class_codes: np.ndarray, n_synthetic: int) -> np.ndarray:
    """``int64`` codes of the shape of ``class_codes`` ``[N, T − 1]``: one per cell of
    pattern class × sequence kind, ``2·class_code`` for the last ``n_synthetic`` sequences
    (synthetic) and ``2·class_code + 1`` for the others (natural text). The ``induction``
    class is the tokens copying predicts, so the cells also split predictable from not."""
    c = np.asarray(class_codes).astype(np.int64)
    if c.ndim != 2 or not 0 <= n_synthetic <= c.shape[0]:
        raise ValueError(
            f"class codes [N, T − 1] and 0 <= n_synthetic <= N, got {list(c.shape)} and "
            f"{n_synthetic}."
        )
    natural = np.arange(c.shape[0])[:, None] < c.shape[0] - n_synthetic
    return 2 * c + natural


def class_means(weights: np.ndarray, codes: np.ndarray, power: float = 1.0) -> dict[int, float]:
    """``{code: mean of weights ** power over the entries with that code}`` (float64; any
    shape, ``weights`` and ``codes`` alike): the divisors of :func:`class_neutral`, for
    applying its rule to other units of the same classes."""
    w = np.asarray(weights, dtype=np.float64).ravel() ** power
    c = np.asarray(codes).ravel()
    return {int(code): float(w[c == code].mean()) for code in np.unique(c)}


def class_neutral(weights: np.ndarray, codes: np.ndarray, power: float = 1.0) -> np.ndarray:
    """``weights ** power`` divided, within each class of ``codes``, by its class mean.

    Every class then has mean weight 1 (no class re-weighting is left), and the ratios of
    two weights within a class are those of ``weights`` raised to ``power`` (the dose of
    the within-class part). ``weights`` must be >= 0 with no class all 0; shapes of ``weights`` and
    ``codes`` must agree. Returns float64 of the same shape.
    """
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(codes)
    if w.shape != c.shape:
        raise ValueError(f"weights {w.shape} and class codes {c.shape} differ in shape.")
    if power <= 0 or not (w >= 0).all():
        raise ValueError(
            f"class_neutral needs weights >= 0 and a power > 0, got power {power} and the "
            f"smallest weight {w.min()}."
        )
    flat_c, flat_p = c.ravel(), w.ravel() ** power
    out = np.empty_like(flat_p)
    for code, mean in class_means(w, c, power).items():
        if mean == 0:
            raise ValueError(f"class {code} has weight 0 on every unit: it has no mean to keep.")
        idx = flat_c == code
        out[idx] = flat_p[idx] / mean
    return out.reshape(w.shape)


def class_neutral_at_ratio(
    weights: np.ndarray, codes: np.ndarray, ratio: float, tol: float = 1e-3
) -> tuple[np.ndarray, float]:
    """:func:`class_neutral` at the power whose ``decile_ratio`` is ``ratio`` (> 1), and
    that power, by bisection (the within-class ratios, and so the decile ratio, grow with
    the power). Raises when even power 64 falls short (the weights are nearly constant
    within every class)."""
    if ratio <= 1:
        raise ValueError(f"a dose ratio above 1 is needed, got {ratio}.")
    low, high = 0.0, 64.0
    if decile_ratio(class_neutral(weights, codes, high)) < ratio:
        raise ValueError(
            f"class-neutral weights do not reach ratio {ratio} at power {high}: they hardly "
            "vary within the classes."
        )
    while high - low > tol * high:
        mid = 0.5 * (low + high)
        if decile_ratio(class_neutral(weights, codes, mid)) < ratio:
            low = mid
        else:
            high = mid
    return class_neutral(weights, codes, high), high
