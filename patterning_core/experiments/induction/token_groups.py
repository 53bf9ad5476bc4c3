"""Training tokens by where induction pays: synthetic or natural sequence, predictable by
copying or not; the mean weight a weighting gives each group, and weights that scale one
group alone.

In the ``induce`` substrates a fraction of the training sequences are synthetic in-context
bigrams (``lm_data.mix_in_context_bigrams``: the corpus sequences first, the synthetic ones
after them) whose predictable tokens reward exactly the previous-token + induction head
pair. χ's probes are natural text, so a weighting's values on the synthetic tokens are
extrapolated by the unit features, far from where χ was measured; :func:`group_weights`
says what each weighting did there.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from patterning_core.experiments.induction.unit_features import predictable_units

GROUPS = ("synthetic_predictable", "synthetic_other", "natural_predictable", "natural_other")


def token_groups(tokens: Tensor, n_synthetic: int, chunk: int = 4096) -> dict[str, np.ndarray]:
    """``{group: bool [N, T − 1]}`` for every group of :data:`GROUPS`, over the loss units of
    the training tokens ``int64 [N, T]`` whose last ``n_synthetic`` sequences are synthetic
    (``LMTokens.n_synthetic``)."""
    if not 0 <= n_synthetic <= tokens.shape[0]:
        raise ValueError(f"n_synthetic must lie in [0, {tokens.shape[0]}], got {n_synthetic}")
    predictable = np.concatenate(
        [predictable_units(tokens[i : i + chunk]) for i in range(0, tokens.shape[0], chunk)]
    )
    synthetic = (np.arange(tokens.shape[0]) >= tokens.shape[0] - n_synthetic)[:, None]
    return {
        "synthetic_predictable": synthetic & predictable,
        "synthetic_other": synthetic & ~predictable,
        "natural_predictable": ~synthetic & predictable,
        "natural_other": ~synthetic & ~predictable,
    }


def group_weights(weights: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean weight of each group, the weights divided by their overall mean first (1 for
    every group under uniform weights)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.mean()
    return {name: float(w[mask].mean()) for name, mask in groups.items() if mask.any()}


def group_scaled_weights(groups: dict[str, np.ndarray], group: str, factor: float) -> np.ndarray:
    """``float32 [N, T − 1]``: weight ``factor`` on the units of ``group``, 1 elsewhere,
    divided by the mean (a naive lever: one group's weight changed, nothing else)."""
    if group not in groups:
        raise ValueError(f"unknown group {group!r}; groups: {', '.join(groups)}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    w = np.where(groups[group], factor, 1.0)
    return (w / w.mean()).astype(np.float32)
