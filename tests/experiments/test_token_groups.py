"""Token groups of the induce substrates: known answers on constructed data."""

import numpy as np
import pytest
import torch

from patterning_core.experiments.induction.token_groups import (
    GROUPS,
    bigram_surprise,
    group_scaled_weights,
    group_weights,
    half_scaled_weights,
    token_groups,
)
from patterning_core.experiments.induction.unit_features import predictable_units


def test_groups_partition_the_units_by_sequence_kind_and_copying():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (8, 12), generator=g)  # few ids: many repeated bigrams
    groups = token_groups(tokens, 2, chunk=3)  # the last 2 of 8 synthetic
    assert set(groups) == set(GROUPS)
    total = sum(m.astype(int) for m in groups.values())
    np.testing.assert_array_equal(total, np.ones((8, 11), dtype=int))
    pred = predictable_units(tokens)
    np.testing.assert_array_equal(groups["synthetic_predictable"][6:], pred[6:])
    assert not groups["synthetic_predictable"][:6].any()
    np.testing.assert_array_equal(groups["natural_other"][:6], ~pred[:6])


def test_group_weights_and_one_group_scaled():
    g = torch.Generator().manual_seed(1)
    groups = token_groups(torch.randint(0, 5, (8, 12), generator=g), 2)
    uniform = group_weights(np.full((8, 11), 3.0), groups)
    assert all(v == pytest.approx(1.0) for v in uniform.values())
    w = group_scaled_weights(groups, "synthetic_predictable", 2.0)
    assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0, rel=1e-6)
    means = group_weights(w, groups)
    assert means["synthetic_predictable"] / means["natural_other"] == pytest.approx(2.0)
    assert means["synthetic_other"] == pytest.approx(means["natural_predictable"])
    with pytest.raises(ValueError, match="unknown group"):
        group_scaled_weights(groups, "synthetic", 2.0)
    with pytest.raises(ValueError, match="positive"):
        group_scaled_weights(groups, "natural_other", 0.0)


def test_groups_refuse_more_synthetic_sequences_than_there_are():
    with pytest.raises(ValueError, match="n_synthetic"):
        token_groups(torch.zeros(4, 6, dtype=torch.int64), 5)


def test_bigram_surprise_by_hand():
    """Counted over row 0 only: after 1 come 2, 2, 3 (c(1) = 3), after 2 come 1, 1
    (c(2) = 2), nothing after 3; k = 3 distinct tokens. So p̂(2 | 1) = 2.5 / 4.5,
    p̂(1 | 2) = 2.5 / 3.5, p̂(3 | 1) = 1.5 / 4.5, an unseen pair after 1: 0.5 / 4.5, and
    after 3: 0.5 / 1.5."""
    tokens = torch.tensor([[1, 2, 1, 2, 1, 3], [1, 1, 2, 1, 3, 3]])
    s = bigram_surprise(tokens, rows=np.array([0]))
    assert s.shape == (2, 5)
    np.testing.assert_allclose(s[0, 0], -np.log(2.5 / 4.5))  # 1 → 2
    np.testing.assert_allclose(s[0, 1], -np.log(2.5 / 3.5))  # 2 → 1: both of 2's
    np.testing.assert_allclose(s[0, 4], -np.log(1.5 / 4.5))  # 1 → 3
    np.testing.assert_allclose(s[1, 0], -np.log(0.5 / 4.5))  # 1 → 1: never counted
    np.testing.assert_allclose(s[1, 4], -np.log(0.5 / 1.5))  # 3 → 3: 3 never came first
    full = bigram_surprise(tokens)
    assert full[1, 0] < s[1, 0]  # counted over both rows, 1 → 1 is no longer unseen


def test_half_scaled_weights_same_values_on_different_units():
    groups = {"a": np.array([[True, True, True, True, False, False]]), "b": np.zeros((1, 6), bool)}
    score = np.array([[4.0, 1.0, 3.0, 2.0, 9.0, 9.0]])
    high = half_scaled_weights(groups, "a", score, "high", 4.0)
    low = half_scaled_weights(groups, "a", score, "low", 4.0)
    rand = half_scaled_weights(groups, "a", score, "random", 4.0, seed=3)
    mean = (4 + 4 + 1 + 1 + 1 + 1) / 6  # two of the group's four units at 4
    np.testing.assert_allclose(high, np.array([[4, 1, 4, 1, 1, 1]]) / mean, rtol=1e-6)
    np.testing.assert_allclose(low, np.array([[1, 4, 1, 4, 1, 1]]) / mean, rtol=1e-6)
    assert sorted(rand.ravel().tolist()) == sorted(high.ravel().tolist())
    assert (rand[0, 4:] == high[0, 4:]).all()  # outside the group: untouched
    moved = half_scaled_weights(groups, "a", score, "high", 1.75, rest=0.25)
    np.testing.assert_allclose(moved, [[1.75, 0.25, 1.75, 0.25, 1, 1]], rtol=1e-6)  # mean 1
    with pytest.raises(ValueError, match="half must be"):
        half_scaled_weights(groups, "a", score, "middle", 4.0)
