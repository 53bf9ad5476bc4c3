"""The convergence check on estimates with known noise and bias."""

import numpy as np
import pytest

from patterning_core.estimators.convergence import structure_reproducibility, variant_agreement


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


def test_structure_reproducibility_recovers_the_reliability_beyond_the_leading_mode():
    # χ = a dominant shared pattern (PC1, ~99 % of the variance) + a rank-2 structure of
    # per-entry variance s² orthogonal to it + independent noise of variance n² per seed.
    # Beyond PC1 each row's correlation between seeds estimates s²/(s² + n²); with 2,000
    # units one row's r has SD ≈ (1 − r²)/√2000 ≈ 0.017, the median of 18 rows less:
    # tolerance 0.05 (3 SD of one row).
    rng = np.random.default_rng(1)
    comps, units = 18, 2000
    shared = rng.standard_normal(units)
    shared /= shared.std()
    basis = rng.standard_normal((2, units))
    basis -= np.outer(basis @ shared / (shared @ shared), shared)  # ⟂ the shared pattern
    basis /= basis.std(axis=1, keepdims=True)
    structure = rng.standard_normal((comps, 2)) @ basis / np.sqrt(2)
    structure /= structure.std(axis=1, keepdims=True)  # s² = 1 per row
    truth = 20.0 * (1 + 0.1 * rng.standard_normal((comps, 1))) * shared + structure
    for noise_sd, expected in [(1.0, 0.5), (0.5, 0.8)]:
        a = truth + noise_sd * rng.standard_normal(truth.shape)
        b = truth + noise_sd * rng.standard_normal(truth.shape)
        out = structure_reproducibility(a, b)
        assert out["median"] == pytest.approx(expected, abs=0.05)
        assert len(out["per_component"]) == comps


def test_structure_reproducibility_of_noise_beyond_the_leading_mode_is_zero():
    # Only the shared pattern is real: the residuals are independent noise, r ≈ 0 with SD
    # 1/√2000 ≈ 0.022 per row; |median| < 0.07 (3 SD of one row).
    rng = np.random.default_rng(2)
    shared = rng.standard_normal(2000)
    truth = np.outer(1 + 0.1 * rng.standard_normal(18), 20 * shared)
    a = truth + rng.standard_normal(truth.shape)
    b = truth + rng.standard_normal(truth.shape)
    assert abs(structure_reproducibility(a, b)["median"]) < 0.07
