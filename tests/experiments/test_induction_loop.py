"""Loop closure: localized losses from store statistics and the shift comparison."""

import numpy as np
import pytest
import xarray as xr

from patterning_core.experiments.induction.loop import (
    along_direction,
    compare_shift,
    localized_loss,
    predicted_shift,
)


def test_localized_loss_is_the_count_weighted_chain_mean():
    phi = np.array([[1.0, 3.0], [2.0, 2.0]])  # [component, chain]
    count = np.array([[1, 3], [2, 2]])
    stats = xr.Dataset(
        {"phi_mean": (("component", "chain"), phi), "count": (("component", "chain"), count)}
    )
    mean, se = localized_loss(stats)
    np.testing.assert_allclose(mean, [(1 + 9) / 4, 2.0])
    np.testing.assert_allclose(se, [np.std([1, 3], ddof=1) / np.sqrt(2), 0.0])


def test_predicted_shift_and_comparison():
    chi = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 2.0, -2.0], [1.0, 1.0, 1.0, 1.0]])
    rho = np.array([1.5, 0.5, 1.0, 1.0])
    # nβ·χ(ρ−1)/U = 10·[1, 0, 0]/4
    np.testing.assert_allclose(predicted_shift(chi, rho, 10.0), [2.5, 0.0, 0.0])
    names = ["embed", "L0H0", "L1H0"]
    out = compare_shift(np.array([5.0, 0.0, 0.0]), np.array([2.5, 0.0, 0.0]), names)
    assert out["cosine"] == pytest.approx(1.0) and out["gain"] == pytest.approx(2.0)
    out = compare_shift(np.array([0.0, 1.0, -1.0]), np.array([0.0, -1.0, -1.0]), names)
    assert out["cosine"] == pytest.approx(0.0) and out["head_signs_agree"] == 1
    assert out["heads"] == 2
    with pytest.raises(ValueError, match="units"):
        predicted_shift(chi, rho[:3], 1.0)


def test_predicted_shift_does_not_depend_on_the_reference_loss():
    """χ_z = −Cov[φ, ℓ_z − L] moves by a per-component constant when the reference loss L
    changes; a re-weighting normalized like the retraining's loss (Σρℓ/Σρ) has zero total
    mass over the units, so its predicted response must not move, whatever the weights' mean.
    Uniform weights of any size predict nothing; weights scaled by a constant predict the
    same as the unscaled ones."""
    rng = np.random.default_rng(0)
    chi = rng.normal(size=(3, 50))
    rho = rng.uniform(0.5, 1.5, size=50)
    shifted = chi + np.array([[2.0], [-1.0], [0.5]])  # another reference loss
    np.testing.assert_allclose(predicted_shift(shifted, rho, 30.0), predicted_shift(chi, rho, 30.0))
    np.testing.assert_allclose(
        predicted_shift(chi, 1.3 * rho, 30.0), predicted_shift(chi, rho, 30.0)
    )
    np.testing.assert_allclose(predicted_shift(chi, np.full(50, 1.7), 30.0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        predicted_shift(chi, np.zeros(50), 1.0)


def test_along_direction_projects_on_the_unit_vector_with_independent_errors():
    # direction (3, 4)/5; measured (1, 2) → (3 + 8)/5; se² = (9·0.1² + 16·0.2²)/25
    value, se = along_direction(np.array([1.0, 2.0]), np.array([0.1, 0.2]), np.array([3.0, 4.0]))
    assert value == pytest.approx(11 / 5)
    assert se == pytest.approx(np.sqrt((9 * 0.01 + 16 * 0.04) / 25))
    # the scale of the direction does not matter, its sign does
    assert along_direction(np.array([1.0, 2.0]), np.zeros(2), np.array([-6.0, -8.0]))[0] == (
        pytest.approx(-11 / 5)
    )
    with pytest.raises(ValueError, match="zero"):
        along_direction(np.ones(2), np.ones(2), np.zeros(2))
