"""Weights' profile over context positions: known answers on constructed weights."""

import numpy as np
import pytest

from patterning_core.experiments.induction.position_profile import (
    balance_positions,
    position_only_weights,
    position_profile,
    profile_summary,
)


def test_profile_of_a_position_weighting_and_of_one_that_ignores_position():
    p = np.linspace(0.5, 1.5, 8)  # mean 1
    rows = np.random.default_rng(0).uniform(0.5, 2.0, size=(5, 1))
    # each sequence scaled by its own factor, positions by p: the profile is p / mean(p)
    np.testing.assert_allclose(position_profile(rows * p), p * rows.mean() / (rows * p).mean())
    np.testing.assert_allclose(position_profile(np.broadcast_to(rows, (5, 8))), np.ones(8))
    with pytest.raises(ValueError, match=r"\[N, T - 1\]"):
        position_profile(np.ones(8))


def test_profile_summary_quarters():
    s = profile_summary(np.array([0.8, 0.8, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2]))
    assert s["first_quarter"] == pytest.approx(0.8)
    assert s["last_quarter"] == pytest.approx(1.2)
    assert s["late_over_early"] == pytest.approx(1.5)


def test_position_only_weights_carry_the_profile_alone():
    p = np.array([2.0, 1.0, 1.0, 0.0])  # mean 1
    w = position_only_weights(p * 3.0, 6)  # rescaled to mean 1
    assert w.shape == (6, 4) and w.dtype == np.float32
    np.testing.assert_allclose(w, np.broadcast_to(p, (6, 4)))
    np.testing.assert_allclose(position_profile(w), p)


def test_balance_positions_removes_any_per_position_offset():
    rng = np.random.default_rng(1)
    content = rng.standard_normal((50, 7))
    offset = np.linspace(-1, 1, 7)  # what the position adds
    probe = rng.standard_normal((3, 7))
    train, probe_flat = balance_positions(content + offset, (probe + offset).ravel())
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-12)
    # the probes are centred by the training means, so the offset leaves them as it does
    # the training units: the result does not depend on it
    train0, probe0 = balance_positions(content, probe.ravel())
    np.testing.assert_allclose(train, train0, atol=1e-12)
    np.testing.assert_allclose(probe_flat, probe0, atol=1e-12)
    assert probe_flat.shape == (21,)
    with pytest.raises(ValueError, match="dh_train"):
        balance_positions(np.ones(7))
