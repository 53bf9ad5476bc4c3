"""The convergence check on estimates with known noise and bias."""

import numpy as np
import pytest

from patterning_core.estimators.convergence import variant_agreement


def estimates(sigma: float, bias: float, ratio: float, seed: int, size: int = 20000):
    """Truth + noise: chosen and replica with per-entry SD σ/√size (so E‖error‖² = σ²),
    the variant with SD √ratio·σ/√size plus a bias of norm ``bias``."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(size)
    sd = sigma / np.sqrt(size)
    direction = rng.standard_normal(size)
    direction *= bias / np.linalg.norm(direction)
    chosen = truth + sd * rng.standard_normal(size)
    replica = truth + sd * rng.standard_normal(size)
    variant = truth + direction + np.sqrt(ratio) * sd * rng.standard_normal(size)
    return chosen, replica, variant


def test_unbiased_variant_agrees_and_bias_is_estimated():
    # With 20,000 entries the squared norms are sums of 20,000 χ² terms: relative SD ≈
    # √(2/20000) = 1 %, so σ² and ‖b‖² are recovered to a few % of σ².
    chosen, replica, variant = estimates(sigma=1.0, bias=0.0, ratio=0.5, seed=0)
    out = variant_agreement(chosen, replica, variant, draw_ratio=0.5)
    assert out["noise_sq"] == pytest.approx(1.0, rel=0.05)
    assert out["bias_sq"] == pytest.approx(0.0, abs=0.05)
    assert out["agrees"]
    chosen, replica, variant = estimates(sigma=1.0, bias=2.0, ratio=1.0, seed=1)
    out = variant_agreement(chosen, replica, variant, draw_ratio=1.0)
    assert out["bias_sq"] == pytest.approx(4.0, abs=0.2)
    assert not out["agrees"] and out["bias_over_noise"] == pytest.approx(4.0, rel=0.1)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="different shapes"):
        variant_agreement(np.zeros(3), np.zeros(3), np.zeros(4))
