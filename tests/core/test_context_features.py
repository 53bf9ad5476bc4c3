"""In-context features against a direct count over every position (their definition)."""

import pytest
import torch

from patterning_core.data.context_features import FEATURE_NAMES, context_features
from patterning_core.data.token_classes import induction_mask


def brute_force(seq: list[int]) -> dict[str, list]:
    """The module doc's definitions, one position at a time."""
    T = len(seq)
    out = {name: [0] * T for name in FEATURE_NAMES}
    for t in range(T):
        out["token_count"][t] = sum(seq[s] == seq[t] for s in range(t))
        if t == 0:
            out["prev_seen"][t] = False
            out["bigram_repeated"][t] = False
            out["induction_share"][t] = 0.0
            continue
        occ = [s for s in range(t - 1) if seq[s] == seq[t - 1]]
        big = [s for s in range(1, t) if seq[s - 1] == seq[t - 1] and seq[s] == seq[t]]
        out["prev_count"][t] = len(occ)
        out["prev_seen"][t] = bool(occ)
        out["prev_distance"][t] = (t - 1) - max(occ) if occ else 0
        out["bigram_count"][t] = len(big)
        out["bigram_repeated"][t] = bool(big)
        out["induction_share"][t] = len(big) / len(occ) if occ else 0.0
    return out


@pytest.mark.parametrize("vocab", [3, 10])
def test_features_match_direct_count(vocab):
    g = torch.Generator().manual_seed(vocab)
    tokens = torch.randint(0, vocab, (5, 23), generator=g)
    feats = context_features(tokens, chunk=2).as_dict()
    for b in range(tokens.shape[0]):
        expected = brute_force(tokens[b].tolist())
        for name in FEATURE_NAMES:
            got = feats[name][b].tolist()
            if name == "induction_share":
                assert got == pytest.approx(expected[name], abs=1e-6), name
            else:
                assert got == expected[name], name


def test_worked_example_and_agreement_with_induction_class():
    # a b c a b d a b: at the last "b" (t=7) the preceding "a" occurred at 0 and 3 (count 2,
    # most recent 3 → distance 6 - 3 = 3), and "a b" occurred twice before (share 1).
    tokens = torch.tensor([0, 1, 2, 0, 1, 3, 0, 1])
    f = context_features(tokens)
    assert f.prev_count[7] == 2 and f.prev_distance[7] == 3
    assert f.bigram_count[7] == 2 and f.induction_share[7] == 1.0
    # "d" (t=5) follows "b", seen once before (at 1) and followed by "c": share 0.
    assert f.prev_count[5] == 1 and f.bigram_count[5] == 0 and f.induction_share[5] == 0.0
    batch = torch.randint(0, 6, (4, 40), generator=torch.Generator().manual_seed(1))
    assert torch.equal(context_features(batch).bigram_repeated, induction_mask(batch))


def test_matrix_and_bad_shape():
    f = context_features(torch.randint(0, 5, (2, 9)))
    assert f.matrix().shape == (2, 9, len(FEATURE_NAMES))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        context_features(torch.zeros(2, 3, 4, dtype=torch.long))
