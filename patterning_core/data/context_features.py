"""In-context features that decide whether a token is predictable by induction.

For ``tokens: int64 [B, T]``, :func:`context_features` returns per-position features
(shape ``[B, T]`` each). Convention as in :mod:`patterning_core.data.token_classes`: position
``t`` describes token ``tokens[b, t]`` in its context ``tokens[b, : t + 1]``, and the
*preceding token* is ``tokens[b, t - 1]`` (the token an induction head looks up: it finds an
earlier occurrence of it and copies what followed). Position 0 has no preceding token; its
features are 0 (``prev_distance``: 0 as well, with ``prev_seen`` false).

- ``prev_count``: how often the preceding token occurred earlier, at positions ``s < t - 1``.
- ``prev_seen``: ``prev_count > 0``.
- ``prev_distance``: ``(t - 1) - s`` for the most recent such ``s`` (0 where none).
- ``bigram_count``: how often the bigram ``(tokens[t - 1], tokens[t])`` occurred earlier, as
  ``(tokens[s - 1], tokens[s])`` with ``1 <= s < t``.
- ``bigram_repeated``: ``bigram_count > 0`` (the ``induction`` pattern class).
- ``induction_share``: of the earlier occurrences of the preceding token that are followed by
  a token (``s < t - 1``), the share followed by ``tokens[t]``: the probability that copying
  from a uniformly chosen earlier occurrence predicts this token (0 where ``prev_count`` is
  0). Equal to ``bigram_count / prev_count``.
- ``token_count``: how often ``tokens[t]`` itself occurred earlier (``s < t``): what a head
  that copies any earlier token could use.

:func:`for_units` of ``token_classes`` aligns each with the loss units ``[B, T - 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

FEATURE_NAMES = (
    "prev_count",
    "prev_seen",
    "prev_distance",
    "bigram_count",
    "bigram_repeated",
    "induction_share",
    "token_count",
)


@dataclass(frozen=True)
class ContextFeatures:
    """The features of :func:`context_features`, each ``[B, T]`` (module doc)."""

    prev_count: Tensor  # int64
    prev_seen: Tensor  # bool
    prev_distance: Tensor  # int64, 0 where the preceding token was not seen before
    bigram_count: Tensor  # int64
    bigram_repeated: Tensor  # bool
    induction_share: Tensor  # float32 in [0, 1]
    token_count: Tensor  # int64

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def matrix(self) -> Tensor:
        """``float32 [B, T, F]`` in the order of :data:`FEATURE_NAMES`, with the counts and
        the distance as log(1 + x), for regression."""
        cols = []
        for name in FEATURE_NAMES:
            v = getattr(self, name).float()
            if name in ("prev_count", "prev_distance", "bigram_count", "token_count"):
                v = torch.log1p(v)
            cols.append(v)
        return torch.stack(cols, dim=-1)


def context_features(tokens: Tensor, chunk: int = 32) -> ContextFeatures:
    """The features of the module doc for ``tokens: int64 [B, T]`` (or ``[T]``).

    Memory: ``chunk × T × T`` booleans at a time (32 × 256² = 2 MiB).
    """
    squeeze = tokens.ndim == 1
    if squeeze:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [B, T] (or [T]), got shape {tuple(tokens.shape)}")
    B, T = tokens.shape
    out = {
        name: torch.zeros(B, T, dtype=torch.int64)
        for name in ("prev_count", "prev_distance", "bigram_count", "token_count")
    }
    positions = torch.arange(T)
    for i in range(0, B, chunk):
        x = tokens[i : i + chunk]  # [b, T]
        same = x[:, :, None] == x[:, None, :]  # [b, t, s]: tokens[t] == tokens[s]
        earlier = torch.tril(same, diagonal=-1)  # s < t
        out["token_count"][i : i + chunk] = earlier.sum(-1)
        # The preceding token of t is t - 1; its earlier occurrences are s < t - 1, i.e. the
        # token_count row of position t - 1.
        prev_earlier = earlier[:, :-1]  # [b, T-1, T]: row t-1 for t = 1..T-1
        out["prev_count"][i : i + chunk, 1:] = prev_earlier.sum(-1)
        last = torch.where(prev_earlier, positions, -1).amax(dim=-1)  # [b, T-1]
        has = last >= 0
        dist = (positions[:-1] - last).where(has, torch.zeros_like(last))
        out["prev_distance"][i : i + chunk, 1:] = dist
        # Bigram (t-1, t) equals (s-1, s) for s < t, s >= 1: the preceding token matched at
        # s - 1 < t - 1 and the token at s matches tokens[t].
        next_same = same[:, 1:, 1:]  # [b, t', s']: tokens[t'+1] == tokens[s'+1]
        bigram = prev_earlier[:, :, :-1] & next_same  # [b, T-1 (t-1), T-1 (s-1)]
        out["bigram_count"][i : i + chunk, 1:] = bigram.sum(-1)
    prev_count, bigram_count = out["prev_count"], out["bigram_count"]
    share = torch.where(prev_count > 0, bigram_count.float() / prev_count.clamp(min=1).float(), 0.0)
    result = ContextFeatures(
        prev_count=prev_count,
        prev_seen=prev_count > 0,
        prev_distance=out["prev_distance"],
        bigram_count=bigram_count,
        bigram_repeated=bigram_count > 0,
        induction_share=share,
        token_count=out["token_count"],
    )
    if squeeze:
        result = ContextFeatures(**{k: v[0] for k, v in result.as_dict().items()})
    return result
