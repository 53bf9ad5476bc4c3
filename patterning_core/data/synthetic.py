"""Synthetic token sequences with in-context bigrams and planted repeated spans (``bench``, tests).

Each sequence of length ``n_ctx`` is written left to right. At each position, unless a copy is
in progress, a copy starts with probability ``copy_rate`` (when at least ``span_min`` tokens
precede): a span length ``k ~ U{span_min..span_max}`` (clipped to what fits) and a source start
``a ~ U{0..t-k}`` are drawn, and the next ``k`` tokens repeat ``tokens[a : a + k]`` (the source
ends before the copy begins; sources and offsets are uniformly random, so no fixed positional
offset predicts the copies). Otherwise the token is *fresh*: drawn i.i.d. from a Zipf unigram
distribution over the vocabulary, or, with the options below, over the sequence's alphabet, or
taken from the sequence's successor map.

Options:

- ``alphabet_size`` (``m``): each sequence draws its fresh tokens from its own alphabet, ``m``
  distinct tokens chosen uniformly at random from the vocabulary (the Zipf distribution, if
  any, is over the alphabet in a random order, so over many sequences every token is equally
  common). ``successor_rate`` (needs ``alphabet_size``): each sequence also has its own random
  successor map ``f`` (alphabet -> alphabet, a uniformly random function), and a fresh token is,
  with probability ``successor_rate``, ``f(previous token)``. The successor of a token is
  predictable only from context: find the earlier occurrences of the current token and read the
  token after them. ``copied`` marks these tokens as well as planted copies.
- ``max_gap`` keeps sources of copies recent (the copy starts at most ``max_gap`` tokens after
  its source ends).
- ``p_skip`` adds a skip-bigram (a fresh token is, with probability ``p_skip``, a fixed random
  permutation of the token two positions back, or with ``skip_identity=True`` the token two
  positions back itself, an "A B A" pattern), which rewards a previous-token head on its own.
  Not combinable with ``alphabet_size``.

:data:`SYNTHETIC_PRESETS` (``tiny`` for tests, ``bench`` for the ``bench`` transformer) use
uniform alphabets with ``successor_rate=0.7`` plus planted copies (``copy_rate=0.05``): the
in-context successor map is what makes the *canonical* induction circuit form (a layer-0
previous-token head, and a layer-1 head attending from the current token to the token after its
earlier occurrences). Every earlier occurrence of the current token, at any distance (often the
position just before), is evidence for its successor, so only a relative previous-token head
serves all of them; the positional shortcut that planted copies alone teach (below) serves few.

Measured (CPU, one thread; AdamW lr 3e-3 with 100 warm-up steps, batch 32, grad clip 1, via
:func:`patterning_core.model.training.train`; ``ctx``: held-out loss on the ``copied`` tokens;
``prev``: best layer-0 head's mean attention to the previous token on uniform random tokens;
``PMS``: best layer-1 prefix-matching score
(:mod:`patterning_core.experiments.induction.metrics`); chance 0.022 for
``bench``, 0.044 for ``tiny``; formation at 0.3):

``bench`` (20 000 sequences, seed 0; 4 000 steps in 133 s)::

    step    0   500  1000  1500  2000  2250  2500  2750  3000  3500  4000
    loss  6.55  4.85  4.73  4.68  4.40  3.97  3.65  3.47  3.39  3.34  3.33
    ctx   6.55  4.51  4.38  4.30  3.90  3.28  2.81  2.57  2.48  2.42  2.38
    prev  0.06  0.07  0.07  0.09  0.12  0.19  0.46  0.66  0.81  0.86  0.87
    PMS   .022  .002  .002  .006  .134  .332  .595  .654  .673  .645  .661

``tiny`` (4 096 sequences, seed 0; 2 000 steps in 12.5 s; seeds 1-3 cross 0.3 at step 750 to
1 000 and reach PMS 0.64-0.68, prev 0.45-0.59 at 1 500)::

    step    0   250   500   750  1000  1250  1500  2000
    loss  4.49  3.08  2.96  2.77  2.57  2.48  2.43  2.40
    ctx   4.49  2.80  2.64  2.35  2.03  1.89  1.82  1.78
    prev  0.11  0.12  0.14  0.23  0.33  0.44  0.53  0.63
    PMS   .044  .032  .056  .267  .479  .580  .598  .560

The plateau before formation is the in-context unigram (the alphabet); the loss on fresh
non-successor tokens rises after formation (the model bets on the successor). At lr 1e-3
(otherwise the same; ``bench``, 6 000 steps in 189 s) the same circuit forms later: PMS .052 /
.207 / .397 / .541 / .620 and prev 0.13 / 0.17 / 0.23 / 0.39 / 0.73 at steps 3 500 / 4 000 /
4 500 / 5 000 / 6 000.

Why planted copies alone do not suffice, and what else was measured (``bench`` model, CPU, one
thread, 20 000 sequences, seed 0, no alphabet; the canonical circuit did not form in any of
these runs):

- Layer-0 attention starts uniform over ``0..k`` (centre of mass ``k / 2``) and sharpens into a
  *stretched* positional head: key position ``k`` attends to about ``k / 2`` (with adjacent
  heads one position apart), so position ``k`` stores the bigram at ``≈ k / 2``, and a layer-1
  head matching the current token against that stored bigram copies correctly whenever the
  source lies in the first half of the window. That is real in-context copying (with
  ``zipf_exponent=0``, ``copy_rate=0.15``, lr 3e-3 with 200 warm-up steps and sinusoidal
  ``W_pos`` init, the loss on tokens inside copies falls from 6.2 to ≈ 1.0 by ≈ 1 500 steps),
  but layer-1 attends to ``≈ 2 s + 1``, not ``s + 1``, so the prefix-matching score stays at or
  below chance. Sinusoidal position init does not change this. (The old ``bench`` preset,
  Zipf 1 and ``copy_rate=0.05`` at lr 1e-3, formed this circuit at ≈ 2 500 - 3 300 steps.)
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
- ``tiny`` model, ``tiny`` data without an alphabet, short copies (``span_min=2`` or ``3``,
  ``span_max=10``, ``max_gap`` 0, 2, 4 or none, ``copy_rate=0.2``, lr 1e-3 / 3e-3, 3 000
  steps): copied-token loss 2.4–2.8 (of 4.16), best layer-1 prefix-matching score ≤ 0.03.
- ``tiny``, no alphabet, spans 4–10, ``copy_rate=0.2``, each sequence shifted right by a random
  ``0..16`` positions behind random filler (content starts at a random position): copying forms
  (copied-token loss 0.93 at 3 000 steps) but previous-token score 0.03 and prefix-matching
  score 0.02. Moving the content does not break the positional shortcut, which reads window
  positions, not content positions.
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
    alphabet_size: int | None = None  # per-sequence alphabet of this many tokens (None: all)
    successor_rate: float = 0.0  # P(fresh token = the sequence's successor of the previous one)

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
        if self.alphabet_size is not None and not 2 <= self.alphabet_size <= self.d_vocab:
            raise ValueError(
                f"SyntheticConfig.alphabet_size must lie in [2, d_vocab={self.d_vocab}], "
                f"got {self.alphabet_size}"
            )
        if not 0.0 <= self.successor_rate <= 1.0:
            raise ValueError(
                f"SyntheticConfig.successor_rate must lie in [0, 1], got {self.successor_rate}"
            )
        if self.successor_rate > 0 and self.alphabet_size is None:
            raise ValueError("SyntheticConfig.successor_rate > 0 needs alphabet_size")
        if self.alphabet_size is not None and self.p_skip > 0:
            raise ValueError("SyntheticConfig: p_skip cannot be combined with alphabet_size")


SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(
        d_vocab=64,
        n_ctx=32,
        zipf_exponent=0.0,
        span_min=4,
        span_max=10,
        copy_rate=0.05,
        alphabet_size=8,
        successor_rate=0.7,
    ),
    "bench": SyntheticConfig(
        d_vocab=512,
        n_ctx=64,
        zipf_exponent=0.0,
        span_min=8,
        span_max=16,
        copy_rate=0.05,
        alphabet_size=16,
        successor_rate=0.7,
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
    token of each copy included) or drawn as the in-context successor of the previous token
    (``successor_rate``): the tokens that only the context can predict. A deterministic
    function of ``(config, n_seqs, seed)``.
    """
    gen = torch.Generator().manual_seed(seed)
    n, T = n_seqs, config.n_ctx
    # With an alphabet, the loop below works on alphabet slots 0..m-1, mapped to tokens at the end.
    m = config.d_vocab if config.alphabet_size is None else config.alphabet_size
    probs = unigram_probs(m, config.zipf_exponent)
    tokens = torch.multinomial(probs, n * T, replacement=True, generator=gen).view(n, T)
    copied = torch.zeros(n, T, dtype=torch.bool)
    start_u = torch.rand(n, T, generator=gen)
    len_u = torch.rand(n, T, generator=gen)
    src_u = torch.rand(n, T, generator=gen)
    skip_map = torch.randperm(config.d_vocab, generator=gen)
    if config.skip_identity:
        skip_map = torch.arange(config.d_vocab)
    skip_u = torch.rand(n, T, generator=gen)
    rows = torch.arange(n)
    alphabet = succ = succ_u = None
    if config.alphabet_size is not None:  # distinct random tokens, and a random successor map
        alphabet = torch.rand(n, config.d_vocab, generator=gen).argsort(dim=1)[:, :m]
        succ = torch.randint(0, m, (n, m), generator=gen)
        succ_u = torch.rand(n, T, generator=gen)

    def fresh_at(t: int) -> tuple[Tensor, Tensor]:
        """Fresh token at ``t`` (unigram, skip-bigram or successor) and its successor flag."""
        fresh = tokens[:, t]
        if config.p_skip > 0 and t >= 2:  # x_t = skip_map[x_{t-2}] with probability p_skip
            fresh = torch.where(skip_u[:, t] < config.p_skip, skip_map[tokens[:, t - 2]], fresh)
        is_succ = torch.zeros(n, dtype=torch.bool)
        if succ is not None and succ_u is not None and config.successor_rate > 0 and t >= 1:
            is_succ = succ_u[:, t] < config.successor_rate
            fresh = torch.where(is_succ, succ[rows, tokens[:, t - 1]], fresh)
        return fresh, is_succ

    for t in range(1, min(config.span_min, T)):
        tokens[:, t], copied[:, t] = fresh_at(t)
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
        fresh, is_succ = fresh_at(t)
        tokens[:, t] = torch.where(active, tokens[rows, src], fresh)
        copied[:, t] = active | is_succ
        src = src + active.long()
        remaining = remaining - active.long()
    if alphabet is not None:
        tokens = alphabet.gather(1, tokens)
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


def synthetic_like(d_vocab: int, n_ctx: int, n_seqs: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """:func:`generate` with the ``bench`` recipe (alphabet 16, successor rate 0.7, copies of
    8-16 tokens at rate 0.05) for another vocabulary and context length (spans shrink to fit
    contexts shorter than 32). Used to mix in-context bigrams into corpus data."""
    bench = SYNTHETIC_PRESETS["bench"]
    span_max = max(1, min(bench.span_max, n_ctx // 2))
    config = SyntheticConfig(
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        zipf_exponent=bench.zipf_exponent,
        span_min=min(bench.span_min, span_max),
        span_max=span_max,
        copy_rate=bench.copy_rate,
        alphabet_size=min(bench.alphabet_size or d_vocab, d_vocab),
        successor_rate=bench.successor_rate,
    )
    return generate(config, n_seqs, seed=seed)
