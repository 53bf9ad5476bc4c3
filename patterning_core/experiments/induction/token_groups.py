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

from dataclasses import dataclass

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


@dataclass(frozen=True)
class BigramCounts:
    """Bigram counts of a token corpus: ``keys`` (previous · base + next, sorted) with
    ``counts``, ``first`` (previous tokens, sorted) with ``first_counts``, and ``k`` the
    number of distinct tokens in the counted units."""

    keys: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    first_counts: np.ndarray
    k: int
    base: int

    @classmethod
    def from_tokens(cls, tokens: Tensor | np.ndarray, base: int | None = None) -> BigramCounts:
        """Counts over the loss units of ``tokens`` ``int64 [N, T]`` (token ``t`` then
        ``t + 1``); ``base`` above every token id (default: the largest id + 1)."""
        t = np.asarray(tokens, dtype=np.int64)
        if t.ndim != 2 or t.shape[1] < 2:
            raise ValueError(f"tokens must be [N, T] with T ≥ 2, got {t.shape}")
        base = int(t.max()) + 1 if base is None else base
        keys, counts = np.unique(t[:, :-1] * base + t[:, 1:], return_counts=True)
        first, first_counts = np.unique(t[:, :-1], return_counts=True)
        return cls(keys, counts, first, first_counts, len(np.unique(t)), base)

    def surprise(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """``float64``, the shape of the inputs: −log p̂(following | previous), add-½
        smoothed over the tokens seen: (c(prev, next) + ½) / (c(prev) + ½·k)."""
        prev = np.asarray(previous, dtype=np.int64)
        query = prev * self.base + np.asarray(following, dtype=np.int64)
        pair = _lookup(self.keys, self.counts, query)
        return -np.log((pair + 0.5) / (_lookup(self.first, self.first_counts, prev) + 0.5 * self.k))


def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``counts`` of each ``query`` in the sorted ``keys`` (0 where absent)."""
    at = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return np.where(keys[at] == query, counts[at], 0)


def bigram_surprise(tokens: Tensor, rows: np.ndarray | None = None) -> np.ndarray:
    """``float64 [N, T − 1]``: −log p̂(next | previous) of every loss unit of ``tokens``
    ``int64 [N, T]`` (unit ``(b, t)``: token ``t + 1`` after token ``t``), p̂ the bigram
    frequencies of the sequences ``rows`` (default: all; :class:`BigramCounts`). High where
    the bigram is rare given its first token, i.e. where statistics of the corpus cannot
    predict the token and only the context (copying) can."""
    t = np.asarray(tokens, dtype=np.int64)
    counted = t if rows is None else t[np.asarray(rows)]
    counts = BigramCounts.from_tokens(counted, base=int(t.max()) + 1)
    return counts.surprise(t[:, :-1], t[:, 1:])


def half_scaled_weights(
    groups: dict[str, np.ndarray],
    group: str,
    score: np.ndarray,
    half: str,
    factor: float,
    seed: int = 0,
    rest: float = 1.0,
) -> np.ndarray:
    """``float32 [N, T − 1]``: weight ``factor`` on half of ``group``'s units, ``rest`` on the
    group's other half, 1 outside the group, divided by the mean. ``half``: ``"high"`` (the
    units with the highest ``score``, ``[N, T − 1]``), ``"low"`` (the lowest) or
    ``"random"`` (a seeded random half: what shuffling either of the others across the
    group's units gives). Ties are broken by position, so every choice moves the same number
    of units: the three weightings have the same values, only on different units."""
    if group not in groups:
        raise ValueError(f"unknown group {group!r}; groups: {', '.join(groups)}")
    if half not in ("high", "low", "random"):
        raise ValueError(f"half must be 'high', 'low' or 'random', got {half!r}")
    if factor <= 0 or rest <= 0:
        raise ValueError(f"factor and rest must be positive, got {factor} and {rest}")
    members = np.flatnonzero(groups[group])
    values = np.asarray(score, dtype=np.float64).ravel()[members]
    if half == "random":
        order = np.random.default_rng(seed).permutation(len(members))
    else:
        order = np.argsort(-values if half == "high" else values, kind="stable")
    chosen = members[order[: len(members) // 2]]
    w = np.ones(groups[group].size)
    w[members] = rest
    w[chosen] = factor
    w = w.reshape(groups[group].shape)
    return (w / w.mean()).astype(np.float32)
