"""What a loop that retrains with the weights and measures φ again can see, on linear
regression where everything is exact (``known_answers.RegressionResponse``): the fixed-w*
change of ⟨φ⟩ has the first-order term nβ·χ·dh, the retrained one has none and is never
positive."""

from __future__ import annotations

import numpy as np
import pytest

from patterning_core.toys import known_answers as ka

N_BETA, GAMMA = 30.0, 10.0


def regression(seed: int, *, noise: float = 0.5, coords=None, step_size=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + noise * rng.normal(size=40)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]  # the unweighted training's end point
    return ka.RegressionResponse.of(X, y, w_star, N_BETA, GAMMA, step_size, coords), rng


@pytest.mark.parametrize("coords", [None, (0, 2)])
def test_retraining_has_no_first_order_response_where_the_fixed_law_has_n_beta_chi_dh(coords):
    law, rng = regression(0, coords=coords)
    u = rng.normal(size=40)
    u -= u.mean()
    predicted = N_BETA * law.chi() @ u / 40  # d⟨φ⟩/dα at α = 0 for ρ = 1 + α·u

    def slopes(alpha: float) -> tuple[float, float]:
        fixed = (law.change(1 + alpha * u) - law.change(1 - alpha * u)) / (2 * alpha)
        retrained = law.retrained_change(1 + alpha * u) / alpha
        return fixed, retrained

    for alpha in (1e-2, 1e-3):
        fixed, _ = slopes(alpha)
        # central difference: error O(α²) relative to the slope
        assert fixed == pytest.approx(predicted, rel=10 * alpha**2 + 1e-9)
    # retrained: change = c₂α² + O(α³), so change/α shrinks tenfold with α
    _, at_2 = slopes(1e-2)
    _, at_3 = slopes(1e-3)
    assert at_2 != 0 and at_3 / at_2 == pytest.approx(0.1, rel=0.05)
    assert abs(at_3) < 0.05 * abs(predicted)


@pytest.mark.parametrize("step_size", [None, 1e-3])
def test_retraining_with_any_weights_never_raises_phi(step_size):
    for seed in range(3):
        for coords in (None, (1,), (0, 2)):
            law, rng = regression(seed, coords=coords, step_size=step_size)
            for _ in range(20):
                rho = rng.lognormal(0.0, 0.7, size=40)
                assert law.retrained_change(rho) <= 1e-12
            up = law.retrained_change(1 + 0.5 * rng.uniform(-1, 1, size=40))
            assert up < 0  # strictly, for a generic re-weighting of noisy data


def test_realizable_data_leave_the_retrained_phi_unchanged_but_not_the_fixed_law():
    law, rng = regression(1, noise=0.0)
    rho = rng.lognormal(0.0, 0.7, size=40)
    assert law.retrained_change(rho) == pytest.approx(0.0, abs=1e-12)
    assert abs(law.change(rho)) > 1e-6
