"""The induction experiment's own pieces of patterning: scores of the heads, the pattern
class of every training unit, the loss per class, and the interpolated formation step. The
weights along the induction mode are the generic recipe of
``patterning_core.estimators.mode_weights`` (scores: the heads' later prefix-matching
scores; classes: ``data.token_classes``); ``weights`` applies it to a χ store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from patterning_core.data.token_classes import PRIMARY_CLASSES, classify, for_units
from patterning_core.experiments.induction.metrics import (
    prefix_matching_scores,
    previous_token_scores,
)
from patterning_core.model.transformer import TransformerConfig, head_name, loss_per_token


def head_scores(params: Mapping[str, Tensor], config: TransformerConfig) -> dict[str, float]:
    """Prefix-matching score of every head, keyed by component name (``"L1H3"``)."""
    scores = prefix_matching_scores(params, config)  # [n_layers, n_heads]
    return {
        head_name(layer, head): float(scores[layer, head])
        for layer in range(scores.shape[0])
        for head in range(scores.shape[1])
    }


def circuit_scores(
    params: Mapping[str, Tensor], config: TransformerConfig, tokens: Tensor | None = None
) -> dict[str, float]:
    """Each head's score for its part in the induction circuit, keyed ``"L0H2"``: layer-0
    heads their previous-token score, heads of later layers their prefix-matching score
    (both on the same repeated random sequences, ``metrics.repeated_random_tokens``, unless
    ``tokens`` are given)."""
    pms = prefix_matching_scores(params, config, tokens)
    return circuit_scores_from(pms, previous_token_scores(params, config, tokens))


def circuit_scores_from(pms: Tensor, prev: Tensor) -> dict[str, float]:
    """:func:`circuit_scores` from the two ``[n_layers, n_heads]`` score tables."""
    return {
        head_name(layer, head): float(prev[0, head] if layer == 0 else pms[layer, head])
        for layer in range(pms.shape[0])
        for head in range(pms.shape[1])
    }


def crossing_step(steps: Sequence[int], scores: Sequence[float], threshold: float) -> float | None:
    """Step at which ``scores`` first reach ``threshold``, linearly interpolated between
    the two checkpoints around the first crossing (None: never reached). Finer than
    ``induction.formation_step``, which is the checkpoint itself."""
    for i, (step, score) in enumerate(zip(steps, scores, strict=True)):
        if score >= threshold:
            if i == 0:
                return float(step)
            s0, v0 = steps[i - 1], scores[i - 1]
            return float(s0 + (step - s0) * (threshold - v0) / (score - v0))
    return None


def unit_classes(tokens: Tensor, token_strings: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Primary pattern class of every loss unit of ``tokens int64 [N, T]``.

    Returns ``(codes int64 [N, T − 1], names)``: ``names[codes[b, t]]`` is the class of the
    token unit (b, t) predicts (token t + 1), as ``lm_data.unit_labels`` labels the probes.
    """
    codes = for_units(classify(tokens, token_strings).primary())
    return codes.numpy().astype(np.int64), list(PRIMARY_CLASSES)


@torch.no_grad()
def loss_by_class(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor,
    token_strings: Sequence[str],
) -> dict[str, float]:
    """Mean unweighted loss per pattern class (:func:`unit_classes`) of the units of
    ``tokens int64 [B, T]`` (e.g. held-out sequences), for the classes present."""
    losses = loss_per_token(params, tokens, config).numpy()  # [B, T - 1]
    codes, names = unit_classes(tokens, token_strings)
    return {
        names[c]: float(losses[codes == c].mean()) for c in np.unique(codes) if (codes == c).any()
    }
