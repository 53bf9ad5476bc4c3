"""Induction metrics: prefix-matching score per head, in-context-learning score, formation step.

Prefix-matching score (Olsson et al. 2022) of a head: on sequences ``r_0 .. r_{L-1} r_0 .. r_{L-1}``
of ``L`` distinct random tokens repeated twice, the head's mean attention from each position
``L + i`` of the second copy to position ``i + 1``, the token just after the earlier occurrence
of the current token ``r_i``. Averaged over the ``L - 1`` positions ``i = 0 .. L - 2`` (for
``i = L - 1`` the target would be position ``L``, inside the second copy) and over sequences.

Chance level: a head attending uniformly over its causal window puts ``1 / (L + i + 1)`` on the
target; :func:`prefix_matching_chance` averages that. For ``L = 32`` it is about 0.022.

Formation step: the first checkpoint step at which the best layer-1 head's prefix-matching score
reaches :data:`FORMATION_THRESHOLD` = 0.3: more than 10x the uniform-attention chance for
``L >= 16``, and a previous-token or self-attending head scores about 0 — a head at 0.3 puts
a third of its attention on the induction target. (Formed induction heads typically score
0.5 - 0.95.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from patterning_core.model.checkpoints import list_checkpoints, load_checkpoint
from patterning_core.model.transformer import TransformerConfig, attention_patterns, loss_per_token

FORMATION_THRESHOLD = 0.3


def repeated_random_tokens(
    config: TransformerConfig,
    n_seqs: int = 64,
    half_len: int | None = None,
    seed: int = 0,
    exclude: Sequence[int] = (),
) -> Tensor:
    """``[n_seqs, 2 * half_len]`` int64: ``half_len`` distinct random tokens, repeated twice.

    ``half_len`` defaults to ``n_ctx // 2`` (capped at 256 to keep the metric cheap); tokens in
    ``exclude`` (e.g. special tokens) are never drawn.
    """
    L = half_len if half_len is not None else min(config.n_ctx // 2, 256)
    allowed = torch.ones(config.d_vocab, dtype=torch.bool)
    allowed[list(exclude)] = False
    pool = allowed.nonzero().squeeze(-1)
    if not 2 <= L <= len(pool) or config.n_ctx < 2 * L:
        raise ValueError(
            f"half_len={L} needs 2 <= half_len <= {len(pool)} allowed tokens and "
            f"2 * half_len <= n_ctx={config.n_ctx}"
        )
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(n_seqs, len(pool), generator=gen)
    first = pool[keys.argsort(dim=-1)[:, :L]]
    return torch.cat([first, first], dim=-1)


def prefix_matching_chance(half_len: int) -> float:
    """Prefix-matching score of a head attending uniformly over its causal window."""
    L = half_len
    return sum(1.0 / (L + i + 1) for i in range(L - 1)) / (L - 1)


@torch.no_grad()
def prefix_matching_scores(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor | None = None,
    **token_kwargs: int,
) -> Tensor:
    """Prefix-matching score of every head, ``[n_layers, n_heads]``.

    ``tokens`` (``[B, 2L]``, the same ``L`` tokens twice) defaults to
    :func:`repeated_random_tokens` ``(config, **token_kwargs)``.
    """
    if tokens is None:
        tokens = repeated_random_tokens(config, **token_kwargs)
    L = tokens.shape[-1] // 2
    queries = torch.arange(L, 2 * L - 1)
    keys = queries - L + 1
    scores = []
    for pattern in attention_patterns(params, tokens, config):  # [B, H, T, T]
        scores.append(pattern[:, :, queries, keys].mean(dim=(0, 2)))
    return torch.stack(scores)


@torch.no_grad()
def previous_token_scores(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor | None = None,
    **token_kwargs: int,
) -> Tensor:
    """Previous-token score of every head, ``[n_layers, n_heads]``: the head's mean attention
    from each position ``t >= 1`` to ``t - 1``, over positions and sequences of ``tokens``
    (``[B, T]``; default :func:`repeated_random_tokens` ``(config, **token_kwargs)``, the
    prefix-matching probes). A previous-token head scores near 1; uniform attention scores
    the mean of ``1 / (t + 1)``.
    """
    if tokens is None:
        tokens = repeated_random_tokens(config, **token_kwargs)
    queries = torch.arange(1, tokens.shape[-1])
    scores = [
        pattern[:, :, queries, queries - 1].mean(dim=(0, 2))
        for pattern in attention_patterns(params, tokens, config)
    ]
    return torch.stack(scores)


def best_head_score(scores: Tensor, layer: int = 1) -> float:
    """Max over heads of ``scores[layer]`` (layer 1: the induction heads of a 2-layer model)."""
    return float(scores[layer].max())


@torch.no_grad()
def in_context_learning_score(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor,
    early: int | None = None,
    late: int | None = None,
) -> float:
    """Mean loss at a late context position minus the mean loss at an early one.

    Positions index loss units (unit ``t`` predicts token ``t + 1``). Defaults: ``late`` the last
    unit, ``early`` the unit at a tenth of the context (Olsson et al. use tokens 500 and 50 of
    512). Negative = the model uses earlier context to predict better later.
    """
    losses = loss_per_token(params, tokens, config)  # [B, T-1]
    n_units = losses.shape[-1]
    late = n_units - 1 if late is None else late
    early = max(1, n_units // 10) if early is None else early
    if not 0 <= early < late < n_units:
        raise ValueError(f"need 0 <= early < late < {n_units}, got early={early}, late={late}")
    return float(losses[:, late].mean() - losses[:, early].mean())


def repeated_text_losses(
    params: Mapping[str, Tensor], config: TransformerConfig, spans: Tensor
) -> tuple[float, float]:
    """Mean loss on the first and on the second copy of ``spans [B, L]`` repeated twice.

    Each sequence is ``spans[b]`` followed by itself (``2L <= n_ctx``). First copy: the units
    predicting tokens ``1 .. L-1``; second copy: those predicting tokens ``L+1 .. 2L-1`` (the
    second copy's first token is excluded: nothing predicts it). A model with a working
    induction circuit predicts the second copy far better than the first; on natural text
    this shows the circuit in use outside the random-token probe.
    """
    L = spans.shape[1]
    if config.n_ctx < 2 * L:
        raise ValueError(f"spans of length {L} repeated twice exceed n_ctx={config.n_ctx}")
    with torch.no_grad():
        losses = loss_per_token(params, torch.cat([spans, spans], dim=1), config)
    return float(losses[:, : L - 1].mean()), float(losses[:, L:].mean())


def formation_step(
    steps: Sequence[int], scores: Sequence[float], threshold: float = FORMATION_THRESHOLD
) -> int | None:
    """First step whose score reaches ``threshold`` (None if it never does)."""
    for step, score in zip(steps, scores, strict=True):
        if score >= threshold:
            return int(step)
    return None


@dataclass
class InductionCurve:
    """Prefix-matching scores of every head over a run's checkpoints."""

    steps: list[int]
    scores: Tensor  # [n_checkpoints, n_layers, n_heads]: prefix matching
    layer: int
    threshold: float
    chance: float
    #: ``[n_checkpoints, n_layers, n_heads]``: previous-token scores on the same probes.
    previous_token: Tensor | None = None

    @property
    def best(self) -> list[float]:
        """Best prefix-matching score among the heads of ``layer`` at each checkpoint."""
        return self.scores[:, self.layer].max(dim=-1).values.tolist()

    @property
    def formation_step(self) -> int | None:
        return formation_step(self.steps, self.best, self.threshold)


def induction_curve(
    run_dir: str | os.PathLike[str],
    config: TransformerConfig | None = None,
    layer: int = 1,
    threshold: float = FORMATION_THRESHOLD,
    n_seqs: int = 64,
    half_len: int | None = None,
    seed: int = 0,
    exclude: Sequence[int] = (),
) -> InductionCurve:
    """Prefix-matching scores at every checkpoint of ``run_dir`` (same probe sequences for all).

    ``config`` (default: the first checkpoint's) is checked against every checkpoint.
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(
            f"no checkpoints in {run_dir}; train with run_dir={run_dir!s} first"
        )
    first = load_checkpoint(ckpts[0][1], expected_config=config)
    config = first.config
    if not 0 <= layer < config.n_layers:
        raise ValueError(f"layer {layer} does not exist in a {config.n_layers}-layer model")
    tokens = repeated_random_tokens(config, n_seqs, half_len, seed, exclude)
    steps, scores, previous = [], [], []
    for step, path in ckpts:
        params = load_checkpoint(path, expected_config=config).params
        steps.append(step)
        scores.append(prefix_matching_scores(params, config, tokens))
        previous.append(previous_token_scores(params, config, tokens))
    return InductionCurve(
        steps=steps,
        scores=torch.stack(scores),
        previous_token=torch.stack(previous),
        layer=layer,
        threshold=threshold,
        chance=prefix_matching_chance(tokens.shape[-1] // 2),
    )
