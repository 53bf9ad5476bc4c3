"""LLC and χ on linear regression, whose localized posterior is exactly Gaussian.

Targets are closed-form moments (patterning_core.toys.known_answers). Tolerances are derived,
not tuned: the estimate must lie within Z standard errors of the exact stationary law of
the discretized SGLD chain (the SE from independent chains), and within Z SE plus the
computed discretization bias of the true posterior. Z = 4: a two-sided miss of a correct
estimator has probability < 1e-3 per quantity (t with 31 dof), while every plausible bug
(a sign, a missing centring term, a factor nβ, a wrong mean) is off by many SE here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterning_core.estimators.llc import estimate_llc
from patterning_core.estimators.susceptibility import chi_from_stats, sample_susceptibility_stats
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.toys import known_answers as ka
from patterning_core.toys.models import make_linear_regression

Z = 4.0
N_BETA, GAMMA, EPS = 10.0, 1.0, 1e-2
CHAINS = 32
PROBES = 6
COMPONENTS = {
    "all": {"w": torch.tensor([True, True, True])},
    "w0w1": {"w": torch.tensor([True, True, False])},
}
COORDS = {"all": None, "w0w1": [0, 1]}
CONFIG = SamplerConfig(
    step_size=EPS,
    n_beta=N_BETA,
    localization=GAMMA,
    num_chains=CHAINS,
    num_draws=3000,
    num_burnin=500,
    steps_between_draws=2,
    batch_size=None,
    seed=0,
)


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, data = make_linear_regression(n=100, d=3, seed=0)
    X, y, w = data[0].numpy(), data[1].numpy(), params["w"].numpy()
    loss = ka.mean_squared_residual(X, y, w)
    unit_losses = [ka.squared_residual(X[z], y[z], w) for z in range(PROBES)]
    return loss_fn, params, data, loss, unit_losses


@pytest.fixture(scope="module")
def config():
    return CONFIG


@pytest.fixture(scope="module")
def stats(problem, config):
    loss_fn, params, data, _, _ = problem
    probes = (data[0][:PROBES], data[1][:PROBES])
    return sample_susceptibility_stats(loss_fn, params, data, probes, COMPONENTS, config)


def exact_chi(loss, unit_losses, coords, step_size=None) -> np.ndarray:
    """The two-run estimator's target under Gaussian laws (restricted and full)."""
    restricted = ka.localized_gaussian(loss, N_BETA, GAMMA, coords=coords, step_size=step_size)
    full = ka.localized_gaussian(loss, N_BETA, GAMMA, step_size=step_size)
    phi = loss - ka.Quadratic(np.zeros_like(loss.A), np.zeros_like(loss.b), loss.c)
    return np.array(
        [
            restricted.expect_product(phi, loss)
            - restricted.expect_product(phi, lz)
            - restricted.expect(phi) * (full.expect(loss) - full.expect(lz))
            for lz in unit_losses
        ]
    )


def test_llc_matches_gaussian_closed_form(problem):
    loss_fn, params, data, loss, _ = problem
    cfg = CONFIG.replace(steps_between_draws=1, seed=3)
    result = estimate_llc(loss_fn, params, data, cfg)
    exact = N_BETA * 0.5 * np.trace(loss.A @ ka.localized_gaussian(loss, N_BETA, GAMMA).cov)
    discrete = (
        N_BETA
        * 0.5
        * np.trace(loss.A @ ka.localized_gaussian(loss, N_BETA, GAMMA, step_size=EPS).cov)
    )
    se = result.std / np.sqrt(CHAINS)
    assert se < 0.05 * exact, "the test must be sensitive: SE well below the value"
    assert abs(result.mean - discrete) < Z * se
    assert abs(result.mean - exact) < Z * se + abs(discrete - exact)
    assert result.rhat < 1.05
    assert result.loss_trace.shape == (CHAINS, 3000)
    assert np.isclose(result.init_loss, loss.c)


@pytest.mark.parametrize("component", ["all", "w0w1"])
def test_chi_matches_gaussian_closed_form(problem, stats, component):
    _, _, _, loss, unit_losses = problem
    chi = chi_from_stats(stats).sel(component=component).values
    per_chain = chi_from_stats(stats, per_chain=True).sel(component=component).values
    se = per_chain.std(axis=0, ddof=1) / np.sqrt(CHAINS)
    discrete = exact_chi(loss, unit_losses, COORDS[component], step_size=EPS)
    exact = exact_chi(loss, unit_losses, COORDS[component])
    assert np.all(se < 0.25 * np.abs(discrete).max()), "SE must be small against the signal"
    np.testing.assert_array_less(np.abs(chi - discrete), Z * se)
    np.testing.assert_array_less(np.abs(chi - exact), Z * se + np.abs(discrete - exact))


def test_chi_of_all_weights_is_minus_posterior_covariance(problem, stats):
    """With every weight moving, the estimator reduces to χ_z = −Cov[φ, ℓ_z − L]."""
    _, _, _, loss, unit_losses = problem
    post = ka.localized_gaussian(loss, N_BETA, GAMMA, step_size=EPS)
    phi = loss - ka.Quadratic(np.zeros_like(loss.A), np.zeros_like(loss.b), loss.c)
    minus_cov = np.array([-post.covariance(phi, lz - loss) for lz in unit_losses])
    np.testing.assert_allclose(
        exact_chi(loss, unit_losses, None, step_size=EPS), minus_cov, rtol=1e-10, atol=1e-14
    )


def test_fluctuation_dissipation(problem, stats):
    """nβ·χ_z equals d⟨φ⟩/dh for the posterior of (1−h)·L + h·ℓ_z, recomputed exactly."""
    _, _, _, loss, unit_losses = problem
    phi = loss - ka.Quadratic(np.zeros_like(loss.A), np.zeros_like(loss.b), loss.c)
    h = 1e-4

    def mean_phi(weight: float, lz: ka.Quadratic) -> float:
        tilted = ka.combine([loss, lz], [1 - weight, weight])
        return ka.localized_gaussian(tilted, N_BETA, GAMMA).expect(phi)

    derivative = np.array([(mean_phi(h, lz) - mean_phi(-h, lz)) / (2 * h) for lz in unit_losses])
    chi = chi_from_stats(stats).sel(component="all").values
    se = chi_from_stats(stats, per_chain=True).sel(component="all").std("chain").values
    se = se / np.sqrt(CHAINS)
    bias = np.abs(
        exact_chi(loss, unit_losses, None, step_size=EPS) - exact_chi(loss, unit_losses, None)
    )
    # Central differences of a smooth function: error O(h²) ≈ 1e-8, negligible here.
    np.testing.assert_array_less(np.abs(N_BETA * chi - derivative), N_BETA * (Z * se + bias))
    # And the identity itself holds for the exact moments, to rounding.
    np.testing.assert_allclose(
        N_BETA * exact_chi(loss, unit_losses, None), derivative, rtol=1e-5, atol=1e-9
    )


def test_chi_dataarray_layout(stats, config):
    chi = chi_from_stats(stats)
    assert chi.dims == ("component", "unit")
    assert list(chi.component.values) == ["all", "w0w1"]
    assert chi.shape == (2, PROBES)
    assert chi.attrs["n_beta"] == N_BETA
    assert "no n_beta factor" in chi.attrs["convention"]
    assert SamplerConfig.from_dict(__import__("json").loads(chi.attrs["sampler_config"])) == config
    assert np.all(np.isfinite(chi.values))


def test_weight_refined_llc_matches_conditional_gaussian(problem):
    """Moving only w0, w1: λ = nβ·½·tr(H_CC Σ_C) under the conditional posterior."""
    loss_fn, params, data, loss, _ = problem
    cfg = CONFIG.replace(steps_between_draws=1, seed=4)
    result = estimate_llc(loss_fn, params, data, cfg, restrict=COMPONENTS["w0w1"])

    def llc(step_size):
        post = ka.localized_gaussian(loss, N_BETA, GAMMA, coords=[0, 1], step_size=step_size)
        return N_BETA * 0.5 * np.trace(loss.A @ post.cov)

    se = result.std / np.sqrt(CHAINS)
    assert se < 0.05 * llc(None)
    assert abs(result.mean - llc(EPS)) < Z * se
    assert abs(result.mean - llc(None)) < Z * se + abs(llc(EPS) - llc(None))


def test_rmsprop_llc_matches_gaussian_closed_form(problem):
    """RMSProp-preconditioned SGLD (G frozen after burn-in) samples the same posterior.

    With rmsprop_eps = 1, G = 1/(√v̂ + 1) ≤ 1, so the per-coordinate step is at most ε and
    the discretization bias at most that of plain SGLD at ε: relative ε·λ_max(P)/4.
    """
    loss_fn, params, data, loss, _ = problem
    eps = 5e-3
    cfg = CONFIG.replace(
        step_size=eps,
        num_draws=8000,
        num_burnin=2000,
        steps_between_draws=1,
        seed=5,
        preconditioner="rmsprop",
        rmsprop_eps=1.0,
    )
    result = estimate_llc(loss_fn, params, data, cfg)
    exact = N_BETA * 0.5 * np.trace(loss.A @ ka.localized_gaussian(loss, N_BETA, GAMMA).cov)
    precision = N_BETA * loss.A + GAMMA * np.eye(3)
    bias_bound = exact * eps * np.linalg.eigvalsh(precision).max() / 4
    se = result.std / np.sqrt(CHAINS)
    assert se < 0.05 * exact
    assert abs(result.mean - exact) < Z * se + bias_bound


def test_subset_susceptibility_is_the_mean_of_per_unit_susceptibilities(problem, config):
    """χ toward the subset S (one probe whose loss is mean_{z∈S} ℓ_z) equals the mean of
    the per-unit χ_z over S (method.md §8): same chains, the estimator is linear in ℓ."""
    loss_fn, params, data, _, _ = problem

    def subset_or_unit_loss(p, batch):
        xb, yb = batch
        losses = loss_fn(p, (xb, yb))
        return losses.mean(dim=1) if xb.dim() == 3 else losses

    cfg = config.replace(num_draws=300, num_chains=4)
    units = (data[0][:PROBES], data[1][:PROBES])
    subset = (data[0][:PROBES].unsqueeze(0), data[1][:PROBES].unsqueeze(0))
    per_unit = chi_from_stats(
        sample_susceptibility_stats(subset_or_unit_loss, params, data, units, COMPONENTS, cfg)
    )
    toward_subset = chi_from_stats(
        sample_susceptibility_stats(subset_or_unit_loss, params, data, subset, COMPONENTS, cfg)
    )
    np.testing.assert_allclose(
        toward_subset.values[:, 0], per_unit.mean("unit").values, rtol=1e-9, atol=1e-14
    )
