"""Planted-span synthetic data."""

from __future__ import annotations

import pytest
import torch

from patterning_core.data.synthetic import (
    SYNTHETIC_PRESETS,
    SyntheticConfig,
    generate,
    synthetic_tokens,
    unigram_probs,
)
from patterning_core.data.token_classes import induction_mask


def _copy_starts(copied: torch.Tensor) -> torch.Tensor:
    prev = torch.cat([torch.zeros_like(copied[:, :1]), copied[:, :-1]], dim=1)
    return copied & ~prev


@pytest.mark.parametrize("name", sorted(SYNTHETIC_PRESETS))
def test_presets_are_deterministic_and_in_range(name: str) -> None:
    cfg = SYNTHETIC_PRESETS[name]
    a, ca = generate(cfg, 300, seed=4)
    b, cb = generate(cfg, 300, seed=4)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert not torch.equal(a, generate(cfg, 300, seed=5)[0])
    assert a.shape == (300, cfg.n_ctx) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < cfg.d_vocab
    assert torch.equal(synthetic_tokens(name, 300, seed=4), a)
    assert 0.1 < ca.float().mean() < 0.85  # a substantial share of in-context-predictable tokens


def test_copies_repeat_earlier_text_and_are_induction_tokens() -> None:
    cfg = SyntheticConfig(d_vocab=512, n_ctx=64, span_min=5, span_max=9, copy_rate=0.1)
    tokens, copied = generate(cfg, 400, seed=0)
    inside = copied & ~_copy_starts(copied)
    # Inside a copy (after its first token) the bigram ending here occurred earlier.
    assert induction_mask(tokens)[inside].float().mean() > 0.97
    # Outside copies, repeated bigrams are rare (chance coincidences of frequent tokens).
    assert induction_mask(tokens)[~copied].float().mean() < 0.05
    # Run lengths of copies respect the span bounds (a run may hold back-to-back copies).
    for row in copied[:50]:
        runs = "".join("1" if c else "0" for c in row.tolist()).split("0")
        assert all(len(r) >= 5 for r in runs if r)


def test_max_gap_keeps_sources_recent() -> None:
    cfg = SyntheticConfig(
        d_vocab=4096, n_ctx=64, zipf_exponent=0.0, span_min=6, span_max=6, copy_rate=0.2, max_gap=3
    )
    tokens, copied = generate(cfg, 200, seed=1)
    starts = _copy_starts(copied).nonzero().tolist()
    checked = 0
    for b, t in starts:
        if t + 6 > 64 or not copied[b, t + 5]:
            continue
        span = tokens[b, t : t + 6]
        # the source (found by content; 4096 uniform tokens make accidental matches unlikely)
        for a in range(t - 6 - 3, t - 5):
            if a >= 0 and torch.equal(tokens[b, a : a + 6], span):
                checked += 1
                break
    assert checked > 0.8 * len(starts)


def test_unigram_and_validation() -> None:
    p = unigram_probs(4, 1.0)
    torch.testing.assert_close(p, torch.tensor([12, 6, 4, 3], dtype=torch.float64) / 25)
    with pytest.raises(ValueError, match="span_min"):
        SyntheticConfig(d_vocab=10, n_ctx=8, span_min=5, span_max=6)
    with pytest.raises(ValueError, match="valid presets: bench, tiny"):
        synthetic_tokens("nope", 3)


def test_identity_skip_bigram_repeats_the_token_two_back() -> None:
    # No copies: every fresh token from position 2 on is, with probability p_skip, the token two
    # positions back. With 4096 uniform tokens, chance repeats are ~1/4096, so the repeat rate
    # measures p_skip (0.4 +- 3 sd of a binomial over 200 * 62 draws is +- 0.013).
    cfg = SyntheticConfig(
        d_vocab=4096, n_ctx=64, zipf_exponent=0.0, copy_rate=0.0, p_skip=0.4, skip_identity=True
    )
    tokens, copied = generate(cfg, 200, seed=3)
    assert not copied.any()
    rate = (tokens[:, 2:] == tokens[:, :-2]).float().mean()
    assert abs(float(rate) - 0.4) < 0.02
    # The permutation variant (default) maps the token two back through a fixed bijection, so
    # it rarely repeats it.
    perm = SyntheticConfig(**{**cfg.__dict__, "skip_identity": False})
    ptokens, _ = generate(perm, 200, seed=3)
    assert float((ptokens[:, 2:] == ptokens[:, :-2]).float().mean()) < 0.01
    with pytest.raises(ValueError, match="p_skip"):
        SyntheticConfig(d_vocab=10, n_ctx=8, span_min=2, p_skip=1.5)


def test_alphabet_and_in_context_successor_map() -> None:
    # No planted copies: each sequence uses its own 6 random tokens, and a fresh token is, with
    # probability successor_rate, the sequence's fixed successor of the previous token.
    cfg = SyntheticConfig(
        d_vocab=512,
        n_ctx=64,
        zipf_exponent=0.0,
        copy_rate=0.0,
        alphabet_size=6,
        successor_rate=0.7,
    )
    tokens, flagged = generate(cfg, 300, seed=2)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 512
    assert all(len(set(row.tolist())) <= 6 for row in tokens)
    assert len(set(tokens[:, 0].tolist())) > 100  # alphabets differ between sequences
    assert not flagged[:, 0].any()
    # 0.7 +- 3 sd of a binomial over 300 * 63 draws is +- 0.01
    assert abs(float(flagged[:, 1:].float().mean()) - 0.7) < 0.015
    for row, flags in zip(tokens.tolist(), flagged.tolist(), strict=True):
        successor: dict[int, int] = {}
        for t in range(1, 64):
            if flags[t]:  # the successor of a token is the same wherever it is drawn
                assert successor.setdefault(row[t - 1], row[t]) == row[t]
    # The same seed gives the same sequences; copies on top keep the alphabet.
    assert torch.equal(generate(cfg, 300, seed=2)[0], tokens)
    both = SyntheticConfig(**{**cfg.__dict__, "copy_rate": 0.2, "span_min": 4})
    btokens, _ = generate(both, 100, seed=2)
    assert all(len(set(row.tolist())) <= 6 for row in btokens)
    for bad, match in [
        ({"alphabet_size": 1}, "alphabet_size"),
        ({"alphabet_size": 600}, "alphabet_size"),
        ({"successor_rate": 1.5}, "successor_rate"),
        ({"alphabet_size": None}, "needs alphabet_size"),
        ({"p_skip": 0.3}, "p_skip"),
    ]:
        with pytest.raises(ValueError, match=match):
            SyntheticConfig(**{**cfg.__dict__, **bad})
