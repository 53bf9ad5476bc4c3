"""The linear response of the two-run χ on the induction substrate (issue: "check the
estimator that is actually inverted").

At the reference checkpoint w* of the weights step, for a few heads C: χ of C over
``n_seqs`` training sequences (every token a unit, φ on a fixed batch of them) by the
two-run estimator and by C's restricted run alone, and the measured change of C's
localized loss ⟨φ_C⟩ when the restricted run samples the posterior re-weighted toward the
Induce weights, ρ = 1 + f·(ρ_induce − 1) for small fractions f
(``estimators.linear_response.two_run_linear_check``). The heads checked are those the
circuit is made of: the two layer-1 heads with the highest later prefix matching and the
layer-0 head with the highest later previous-token score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from patterning_core.data.lm_data import select_sequences
from patterning_core.estimators.linear_response import two_run_linear_check
from patterning_core.model.transformer import TransformerConfig, components, make_loss_fn
from patterning_core.sampling.config import SamplerConfig


def circuit_heads(later_scores: Mapping[str, float], n_layer1: int = 2) -> list[str]:
    """The ``n_layer1`` layer-1 heads with the highest later score, then the layer-0 head
    with the highest (names ``L<l>H<h>``)."""
    by_layer = {
        layer: sorted(
            (n for n in later_scores if n.startswith(f"L{layer}H")),
            key=lambda n: later_scores[n],
            reverse=True,
        )
        for layer in (0, 1)
    }
    if not by_layer[0] or len(by_layer[1]) < n_layer1:
        raise ValueError(f"scores for layer-0 and layer-1 heads needed, got {sorted(later_scores)}")
    return [*by_layer[1][:n_layer1], by_layer[0][0]]


def induction_linear_check(
    params: Mapping[str, torch.Tensor],
    config: TransformerConfig,
    train_tokens: torch.Tensor,
    weights: np.ndarray,
    heads: Sequence[str],
    sampler: SamplerConfig,
    n_seqs: int = 16,
    fractions: Sequence[float] = (0.1, 0.25),
    seed: int = 0,
) -> list[dict]:
    """Rows of :func:`two_run_linear_check` for ``heads`` on ``n_seqs`` training sequences
    (``select_sequences(train_tokens, n_seqs, seed)``) re-weighted along ``weights``
    (``[n_train, n_ctx − 1]``, one per training token, mean 1: e.g. the Induce weights)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (train_tokens.shape[0], train_tokens.shape[1] - 1):
        raise ValueError(
            f"weights {weights.shape} must give every training token one weight: "
            f"({train_tokens.shape[0]}, {train_tokens.shape[1] - 1})."
        )
    index = torch.arange(train_tokens.shape[0])
    rows = select_sequences(index[:, None], n_seqs, seed=seed)[:, 0]
    data = (train_tokens[rows],)
    masks = components(config)
    unknown = [h for h in heads if h not in masks]
    if unknown:
        raise ValueError(f"no components {unknown}; the model has {sorted(masks)}.")
    return two_run_linear_check(
        make_loss_fn(config),
        params,
        data,
        {h: masks[h] for h in heads},
        weights[rows.numpy()],
        sampler,
        fractions,
    )
