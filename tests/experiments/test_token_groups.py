"""Token groups of the induce substrates: known answers on constructed data."""

import numpy as np
import pytest
import torch

from patterning_core.experiments.induction.token_groups import (
    GROUPS,
    group_scaled_weights,
    group_weights,
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
