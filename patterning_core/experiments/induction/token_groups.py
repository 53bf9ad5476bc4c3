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


def synthetic_sequences(n_sequences: int, fraction: float) -> np.ndarray:
    """``bool [n_sequences]``: the synthetic sequences of a training set that
    ``mix_in_context_bigrams`` made with ``fraction`` (the last ``m`` of them, where
    ``n_sequences = n + round(n·f / (1 − f))``)."""
    if fraction == 0.0:
        return np.zeros(n_sequences, dtype=bool)
    for n in range(int(n_sequences * (1 - fraction)) - 2, n_sequences + 1):
        if n + round(n * fraction / (1.0 - fraction)) == n_sequences:
            mask = np.zeros(n_sequences, dtype=bool)
            mask[n:] = True
            return mask
    raise ValueError(f"{n_sequences} sequences cannot come from a synthetic fraction {fraction}")


def token_groups(tokens: Tensor, fraction: float, chunk: int = 4096) -> dict[str, np.ndarray]:
    """``{group: bool [N, T − 1]}`` for every group of :data:`GROUPS`, over the loss units of
    the training tokens ``int64 [N, T]`` (``fraction``: the data spec's
    ``in_context_bigrams``)."""
    predictable = np.concatenate(
        [predictable_units(tokens[i : i + chunk]) for i in range(0, tokens.shape[0], chunk)]
    )
    synthetic = synthetic_sequences(tokens.shape[0], fraction)[:, None]
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
