"""Per-unit features that every training token has, for extrapolating dh (natural-text
induction demonstration): the one-hot primary pattern class (``data.token_classes``) and the
in-context features (``data.context_features``) of the token each loss unit predicts.

Units follow ``transformer.per_token_loss``: unit ``(b, t)`` predicts token ``t + 1`` and
gets that token's features (``token_classes.for_units``), so ``bigram_repeated`` of a unit
says that the bigram (token t, token t + 1) occurred earlier in the context: copying
would predict it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from patterning_core.data.context_features import FEATURE_NAMES, context_features
from patterning_core.data.token_classes import PRIMARY_CLASSES, TokenKinds, classify, for_units


def unit_feature_names() -> list[str]:
    """Column names of :func:`unit_features` (classes first, then the in-context features;
    counts and distances as log(1 + x))."""
    return [f"class_{c}" for c in PRIMARY_CLASSES] + list(FEATURE_NAMES)


def unit_features(
    tokens: Tensor, strings: Sequence[str] | TokenKinds, chunk: int = 256
) -> np.ndarray:
    """``float32 [B, T − 1, F]`` features of the loss units of ``tokens: int64 [B, T]``
    (columns :func:`unit_feature_names`)."""
    kinds = strings if isinstance(strings, TokenKinds) else TokenKinds.from_strings(strings)
    out = []
    for i in range(0, tokens.shape[0], chunk):
        part = tokens[i : i + chunk]
        label = for_units(classify(part, kinds).primary())
        onehot = torch.nn.functional.one_hot(label, len(PRIMARY_CLASSES)).float()
        context = context_features(part).matrix()[:, 1:]
        out.append(torch.cat([onehot, context], dim=-1))
    return torch.cat(out).numpy()


def predictable_units(tokens: Tensor) -> np.ndarray:
    """``bool [B, T − 1]``: the unit's token is induction-predictable (its bigram with the
    preceding token occurred earlier in the context), the indicator the mode's token loadings
    are correlated with."""
    return context_features(tokens).bigram_repeated[:, 1:].numpy()
