"""The lever's validation machinery (``parentheses.lever``) on a model where it is exact.

Linear regression with a localized Gaussian prior: the tempered posterior of the ρ-weighted
loss is Gaussian with precision A_ρ = nβ·Xᵀdiag(ρ)X/n + γI and mean
m_ρ = A_ρ⁻¹(nβ·Xᵀdiag(ρ)y/n + γw*), so ⟨L_n⟩_ρ = (1/n)Σ_z ½[(y_z − x_zᵀm_ρ)² + x_zᵀA_ρ⁻¹x_z]
is known in closed form, and so is its derivative along any ρ − 1. The per-string χ, the
first-order prediction and the re-sampled (common random numbers) change must all agree
with it within their Monte Carlo error (and the SGLD step's O(ε·‖A‖) bias, here < 2 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterning_core.experiments.parentheses import lever
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.toys.models import make_linear_regression

N_BETA, GAMMA = 20.0, 5.0


def exact_mean_loss(X: np.ndarray, y: np.ndarray, w_star: np.ndarray, rho: np.ndarray) -> float:
    """⟨L_n⟩ under the tempered posterior of the ρ-weighted loss (module doc)."""
    n, d = X.shape
    A = N_BETA * (X.T * rho) @ X / n + GAMMA * np.eye(d)
    cov = np.linalg.inv(A)
    m = cov @ (N_BETA * (X.T * rho) @ y / n + GAMMA * w_star)
    r = y - X @ m
    return float(0.5 * np.mean(r**2 + np.einsum("zi,ij,zj->z", X, cov, X)))


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    loss_fn, params, data = make_linear_regression(n=24, d=2, seed=4)
    sampler = SamplerConfig(
        step_size=4e-3,
        n_beta=N_BETA,
        localization=GAMMA,
        num_draws=1500,
        num_burnin=300,
        steps_between_draws=2,
        batch_size=None,
    )
    cfg = lever.LeverConfig(sampler=sampler, direction_chains=4, check_chains=16, alphas=(0.2,))
    base = lever.baseline_run(loss_fn, params, data, cfg)
    X, y = (t.numpy() for t in data)
    return loss_fn, params, data, cfg, base, X, y, params["w"].numpy()


def test_string_chi_sums_to_zero_and_shapes():
    rng = np.random.default_rng(0)
    losses = rng.random((3, 50, 7))
    pooled, per_chain = lever.string_chi(losses)
    assert pooled.shape == (7,) and per_chain.shape == (3, 7)
    assert abs(pooled.sum()) < 1e-12 and np.abs(per_chain.sum(axis=1)).max() < 1e-12
    # χ_z = −Cov[L_n, ℓ_z − L_n], pooled over every draw of every chain
    flat = losses.reshape(-1, 7)
    l_n = flat.mean(axis=1)
    expect = -np.array([np.cov(l_n, flat[:, z] - l_n)[0, 1] for z in range(7)])
    np.testing.assert_allclose(pooled, expect, rtol=1e-10, atol=1e-14)


def test_lever_weights_direction_and_scale():
    rng = np.random.default_rng(1)
    chi_n, chi_e = rng.normal(size=(3, 40)), rng.normal(size=(2, 40))
    chi_n -= chi_n.mean(axis=1, keepdims=True)  # Σχ = 0 as for real χ
    chi_e -= chi_e.mean(axis=1, keepdims=True)
    out = lever.lever_weights(chi_n, chi_e, 0.3)
    rho = out["weights"]
    assert abs(rho.mean() - 1) < 1e-12
    assert abs(np.abs(rho - 1).max() - 0.3) < 1e-9  # α = largest relative change
    # the direction lowers the predicted gap: Σ χ_diff·(ρ − 1) < 0
    assert float(out["chi_diff"] @ (rho - 1)) < 0


def test_string_chi_matches_exact_derivative(setting):
    """nβ·(1/n)·Σ_z χ_z δ_z = d⟨L_n⟩ along ρ = 1 + t·δ, for random mean-0 δ."""
    _, _, _, _, base, X, y, w_star = setting
    n = X.shape[0]
    rng = np.random.default_rng(2)
    chi = np.asarray(base["chi_check"])
    per_chain = np.asarray(base["chi_check_per_chain"])
    for _ in range(3):
        delta = rng.normal(size=n)
        delta -= delta.mean()
        t = 1e-4
        exact = (
            exact_mean_loss(X, y, w_star, 1 + t * delta)
            - exact_mean_loss(X, y, w_star, 1 - t * delta)
        ) / (2 * t)
        est = N_BETA * np.mean(chi * delta)
        se = N_BETA * (per_chain @ delta / n).std(ddof=1) / np.sqrt(per_chain.shape[0])
        assert abs(est - exact) < 4 * se + 0.03 * abs(exact), (est, exact, se)


def test_reweighted_run_measures_the_exact_change(setting):
    """Re-sampled Δλ (common random numbers) ≈ exact Δλ; prediction ≈ exact first order."""
    loss_fn, params, data, cfg, base, X, y, w_star = setting
    n = X.shape[0]
    chi = np.asarray(base["chi_direction"])
    rho = lever.lever_weights(chi[None], np.zeros((1, n)), 0.2)["weights"]
    row = lever.reweighted_run(loss_fn, params, data, rho, cfg, base)
    ones = np.ones(n)
    exact = N_BETA * (exact_mean_loss(X, y, w_star, rho) - exact_mean_loss(X, y, w_star, ones))
    t = 1e-4
    first_order = (
        N_BETA
        * (
            exact_mean_loss(X, y, w_star, 1 + t * (rho - 1))
            - exact_mean_loss(X, y, w_star, 1 - t * (rho - 1))
        )
        / (2 * t)
    )
    assert abs(row["measured"] - exact) < 4 * row["measured_se"] + 0.03 * abs(exact), (row, exact)
    assert abs(row["predicted"] - first_order) < 4 * row["predicted_se"] + 0.03 * abs(
        first_order
    ), (row, first_order)
    # common random numbers: the paired difference is far more precise than either mean
    assert row["measured_se"] < 0.5 * base["llc_se"]
    assert row["drift_se"] > 0 and abs(row["drift"]) < 4 * row["drift_se"] + 0.05


def test_temperature_check_is_exact_on_the_gaussian(setting):
    """Raising nβ by 10 %: measured Δ(nβ⟨L_n⟩) ≈ exact; prediction −nβ·Δnβ·Var(L_n) ≈ the
    exact first order; the fluctuation ratio nβ²Var(L_n)/λ is 1 for a Gaussian posterior
    only when γ = 0, so here it is only checked to be of order 1."""
    loss_fn, params, data, cfg, base, X, y, w_star = setting
    row = lever.temperature_check(loss_fn, params, data, cfg, base, factor=1.1)
    n, d = X.shape

    def mean_loss(n_beta: float) -> float:
        A = n_beta * X.T @ X / n + GAMMA * np.eye(d)
        cov = np.linalg.inv(A)
        r = y - X @ w_star
        return float(0.5 * np.mean(r**2 + np.einsum("zi,ij,zj->z", X, cov, X)))

    exact = N_BETA * (mean_loss(1.1 * N_BETA) - mean_loss(N_BETA))
    slope = N_BETA * (mean_loss(N_BETA * (1 + 1e-4)) - mean_loss(N_BETA * (1 - 1e-4))) / 2e-4
    assert abs(row["measured"] - exact) < 4 * row["measured_se"] + 0.03 * abs(exact), (row, exact)
    assert row["predicted"] == pytest.approx(0.1 * slope, rel=0.15), (row, slope)
    assert 0.3 < base["fluctuation_ratio"] < 1.5
