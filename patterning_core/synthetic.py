"""Synthetic token sequences with planted repeated spans (fast induction tests, ``bench``).

Each sequence of length ``n_ctx`` is written left to right. At each position, unless a copy is
in progress, a copy starts with probability ``copy_rate`` (when at least ``span_min`` tokens
precede): a span length ``k ~ U{span_min..span_max}`` (clipped to what fits) and a source start
``a ~ U{0..t-k}`` are drawn, and the next ``k`` tokens repeat ``tokens[a : a + k]`` (the source
ends before the copy begins; sources and offsets are uniformly random, so no fixed positional
offset predicts the copies). Otherwise the token is drawn i.i.d. from a Zipf unigram
distribution over the vocabulary.

Tokens inside a copy after its first one are predictable only by induction (find the earlier
occurrence of the current token, predict what followed it); everything else is predictable only
up to the unigram distribution. A model first learns the unigram statistics (a loss plateau at
about the unigram entropy), then, later, the induction circuit; the smaller ``copy_rate``, the
weaker the induction signal and the longer the plateau.

Options: ``max_gap`` keeps sources recent (the copy starts at most ``max_gap`` tokens after its
source ends); ``p_skip`` adds a skip-bigram (a fresh token is, with probability ``p_skip``, a
fixed random permutation of the token two positions back, or with ``skip_identity=True`` the
token two positions back itself, an "A B A" pattern), which rewards a previous-token head on its
own.

:data:`SYNTHETIC_PRESETS`: ``bench`` for the ``bench`` transformer (AdamW, lr 1e-3, batch 32);
measured (CPU, 20 000 sequences, seed 0): the loss sits on the unigram plateau (≈ 4.7, unigram
entropy 4.76) until ≈ 2 500 steps, then drops to ≈ 4.0 by ≈ 3 300 steps (in-context copying
forms). Caveat, also measured: the circuit that forms copies through a layer-0 head attending to
about half the query position, not a previous-token head, so the prefix-matching score of
:mod:`patterning_core.induction` stays at chance (see the induction module). ``tiny`` is for
quick tests.

Why, and what else was measured (``bench`` model, CPU, one thread, 20 000 sequences, seed 0;
the canonical circuit did not form in any of these runs):

- Layer-0 attention starts uniform over ``0..k`` (centre of mass ``k / 2``) and sharpens into a
  *stretched* positional head: key position ``k`` attends to about ``k / 2`` (with adjacent
  heads one position apart), so position ``k`` stores the bigram at ``≈ k / 2``, and a layer-1
  head matching the current token against that stored bigram copies correctly whenever the
  source lies in the first half of the window. That is real in-context copying (with
  ``zipf_exponent=0``, ``copy_rate=0.15``, lr 3e-3 with 200 warm-up steps and sinusoidal
  ``W_pos`` init, the loss on tokens inside copies falls from 6.2 to ≈ 1.0 by ≈ 1 500 steps),
  but layer-1 attends to ``≈ 2 s + 1``, not ``s + 1``, so the prefix-matching score stays at or
  below chance. Sinusoidal position init does not change this.
- ``max_gap=16`` or ``4``: the same circuit with the layer-0 head at ``≈ 0.65 k``, or at a
  fixed offset of ≈ 8–10 (any offset below the shortest copy distance works).
- ``p_skip=0.25`` (permutation): layer-0 heads are previous-token heads near the start and
  end of the window and stretched in the middle; best layer-1 prefix-matching score ≈ 0.19
  (copied-token loss 0.9) at 2 500 steps.
- ``p_skip=0.4, skip_identity=True, copy_rate=0.05`` or ``0.1``: all eight layer-0 heads
  become previous-token heads within ≈ 500 steps (mean attention to the previous token
  0.65–0.92), but no induction head forms on top of them within 3 000 / 5 000 steps
  (copied-token loss 4.4 / 3.9, best layer-1 prefix-matching score ≤ 0.03). The same holds
  for the ``tiny`` model (4 000 steps, with or without weight decay 0.1, lr 1e-3 or 3e-3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the planted-span generator (see the module docstring)."""

    d_vocab: int
    n_ctx: int
    zipf_exponent: float = 1.0
    span_min: int = 8
    span_max: int = 16
    copy_rate: float = 0.05
    max_gap: int | None = None
    p_skip: float = 0.0
    skip_identity: bool = False  # skip-bigram map: the identity instead of a random permutation

    def __post_init__(self) -> None:
        if self.d_vocab < 2 or self.n_ctx < 2:
            raise ValueError("SyntheticConfig needs d_vocab >= 2 and n_ctx >= 2")
        if not 1 <= self.span_min <= self.span_max or 2 * self.span_min > self.n_ctx:
            raise ValueError(
                f"SyntheticConfig spans must satisfy 1 <= span_min <= span_max and "
                f"2 * span_min <= n_ctx, got span_min={self.span_min}, "
                f"span_max={self.span_max}, n_ctx={self.n_ctx}"
            )
        if not 0.0 <= self.copy_rate <= 1.0:
            raise ValueError(f"SyntheticConfig.copy_rate must lie in [0, 1], got {self.copy_rate}")
        if not 0.0 <= self.p_skip <= 1.0:
            raise ValueError(f"SyntheticConfig.p_skip must lie in [0, 1], got {self.p_skip}")


SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(
        d_vocab=64, n_ctx=32, zipf_exponent=0.0, span_min=4, span_max=10, copy_rate=0.2
    ),
    "bench": SyntheticConfig(
        d_vocab=512, n_ctx=64, zipf_exponent=1.0, span_min=8, span_max=16, copy_rate=0.05
    ),
}


def unigram_probs(d_vocab: int, zipf_exponent: float) -> Tensor:
    """Zipf probabilities ``p(i) ∝ (i + 1)^-s`` over ``d_vocab`` tokens, float64 ``[d_vocab]``."""
    ranks = torch.arange(1, d_vocab + 1, dtype=torch.float64)
    p = ranks.pow(-zipf_exponent)
    return p / p.sum()


def generate(config: SyntheticConfig, n_seqs: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n_seqs`` sequences: ``(tokens int64 [n, n_ctx], copied bool [n, n_ctx])``.

    ``copied[b, t]`` is True where ``tokens[b, t]`` was written by a planted copy (the first
    token of each copy included). A deterministic function of ``(config, n_seqs, seed)``.
    """
    gen = torch.Generator().manual_seed(seed)
    n, T = n_seqs, config.n_ctx
    probs = unigram_probs(config.d_vocab, config.zipf_exponent)
    tokens = torch.multinomial(probs, n * T, replacement=True, generator=gen).view(n, T)
    copied = torch.zeros(n, T, dtype=torch.bool)
    start_u = torch.rand(n, T, generator=gen)
    len_u = torch.rand(n, T, generator=gen)
    src_u = torch.rand(n, T, generator=gen)
    skip_map = torch.randperm(config.d_vocab, generator=gen)
    if config.skip_identity:
        skip_map = torch.arange(config.d_vocab)
    skip_u = torch.rand(n, T, generator=gen)
    if config.p_skip > 0:  # skip-bigram: x_t = skip_map[x_{t-2}] with probability p_skip
        for t in range(2, config.span_min):
            tokens[:, t] = torch.where(
                skip_u[:, t] < config.p_skip, skip_map[tokens[:, t - 2]], tokens[:, t]
            )
    rows = torch.arange(n)
    remaining = torch.zeros(n, dtype=torch.long)
    src = torch.zeros(n, dtype=torch.long)
    for t in range(config.span_min, T):
        k_max = torch.full((n,), min(config.span_max, t, T - t))
        if k_max[0] < config.span_min:  # too close to the end for a new copy
            can_start = torch.zeros(n, dtype=torch.bool)
        else:
            can_start = (remaining == 0) & (start_u[:, t] < config.copy_rate)
        k = config.span_min + (len_u[:, t] * (k_max - config.span_min + 1)).long()
        if config.max_gap is None:  # source anywhere before t: a ~ U{0..t-k}
            a = (src_u[:, t] * (t - k + 1)).long()
        else:  # source ends at most max_gap tokens before t: a ~ U{t-k-gap_max..t-k}
            gap_max = torch.clamp(t - k, max=config.max_gap)
            a = t - k - (src_u[:, t] * (gap_max + 1)).long()
        remaining = torch.where(can_start, k, remaining)
        src = torch.where(can_start, a, src)
        active = remaining > 0
        fresh = tokens[:, t]
        if config.p_skip > 0:
            fresh = torch.where(skip_u[:, t] < config.p_skip, skip_map[tokens[:, t - 2]], fresh)
        tokens[:, t] = torch.where(active, tokens[rows, src], fresh)
        copied[:, t] = active
        src = src + active.long()
        remaining = remaining - active.long()
    return tokens, copied


def synthetic_tokens(name_or_config: str | SyntheticConfig, n_seqs: int, seed: int = 0) -> Tensor:
    """Just the tokens of :func:`generate`, from a preset name or a config."""
    if isinstance(name_or_config, str):
        if name_or_config not in SYNTHETIC_PRESETS:
            raise ValueError(
                f"unknown synthetic preset {name_or_config!r}; valid presets: "
                f"{', '.join(sorted(SYNTHETIC_PRESETS))}"
            )
        name_or_config = SYNTHETIC_PRESETS[name_or_config]
    return generate(name_or_config, n_seqs, seed)[0]
