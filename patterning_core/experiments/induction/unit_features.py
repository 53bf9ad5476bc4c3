"""Per-unit features that every training token has, for extrapolating dh (natural-text
induction demonstration): the one-hot primary pattern class (``data.token_classes``) and the
in-context features (``data.context_features``) of the token each loss unit predicts; and,
for a richer extrapolator, what the reference model itself does at the unit
(:func:`reference_features`: its loss and its heads' attention statistics).

Units follow ``transformer.per_token_loss``: unit ``(b, t)`` predicts token ``t + 1`` and
gets that token's features (``token_classes.for_units``), so ``bigram_repeated`` of a unit
says that the bigram (token t, token t + 1) occurred earlier in the context: copying
would predict it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from patterning_core.data.context_features import FEATURE_NAMES, context_features
from patterning_core.data.token_classes import PRIMARY_CLASSES, TokenKinds, classify, for_units
from patterning_core.model.transformer import (
    TransformerConfig,
    attention_patterns,
    forward,
    per_token_loss,
)


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


REFERENCE_STATISTICS = ("entropy", "self", "previous", "induction_target")


def reference_feature_names(n_layers: int, n_heads: int) -> list[str]:
    """Column names of :func:`reference_features`: ``loss``, then per head ``L<l>H<h>_<stat>``
    for every statistic of :data:`REFERENCE_STATISTICS`."""
    return ["loss"] + [
        f"L{layer}H{head}_{stat}"
        for layer in range(n_layers)
        for stat in REFERENCE_STATISTICS
        for head in range(n_heads)
    ]


def reference_features(
    params: Mapping[str, Tensor], config: TransformerConfig, tokens: Tensor, chunk: int = 256
) -> np.ndarray:
    """``float32 [B, T − 1, 1 + 4·layers·heads]``: what the reference model itself does at
    each loss unit of ``tokens int64 [B, T]`` (an auxiliary model, as the spectroscopy work
    uses; columns :func:`reference_feature_names`). Unit ``(b, t)`` predicts token t + 1 from
    position t, so its features are read at query position t: the model's loss on that
    prediction, and per head the entropy of its attention, the attention to t itself, to
    t − 1, and to the positions j ≤ t that follow an earlier occurrence of token t
    (``tokens[j − 1] == tokens[t]``: where an induction head looks)."""
    out = []
    with torch.no_grad():
        for i in range(0, tokens.shape[0], chunk):
            part = tokens[i : i + chunk]
            T = part.shape[1]
            loss = per_token_loss(forward(params, part, config), part)  # [b, T − 1]
            earlier = torch.zeros(part.shape[0], T, T, dtype=torch.bool)
            earlier[:, :, 1:] = part[:, :, None] == part[:, None, :-1]
            earlier &= torch.ones(T, T, dtype=torch.bool).tril()
            previous = torch.zeros(T, T, dtype=torch.bool)
            previous[torch.arange(1, T), torch.arange(T - 1)] = True
            columns = [loss[..., None]]
            for pattern in attention_patterns(params, part, config):  # [b, H, T, T]
                stats = (
                    -(pattern * pattern.clamp_min(1e-30).log()).sum(-1),
                    pattern.diagonal(dim1=-2, dim2=-1),
                    (pattern * previous).sum(-1),
                    (pattern * earlier[:, None]).sum(-1),
                )
                columns += [s[..., :-1].transpose(1, 2) for s in stats]  # [b, T − 1, H]
            out.append(torch.cat(columns, dim=-1).float())
    return torch.cat(out).numpy()
