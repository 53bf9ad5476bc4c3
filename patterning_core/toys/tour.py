"""The seconds-long tour of the estimators on toy models (what ``patterning toy`` prints).

1. LLC of linear regression, whose localized posterior is Gaussian: the estimate against
   the exact posterior value and against the stationary law of the discretized chain
   (``known_answers.localized_gaussian``), which is what SGLD at step ε converges to.
2. LLC and χ of a one-hidden-layer MLP fitted to a smooth target (no closed form: a
   demonstration of the API, with R̂ as the health check).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from patterning_core.estimators.llc import LLCResult, estimate_llc
from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.sampling.config import SamplerConfig
from patterning_core.toys import known_answers as ka
from patterning_core.toys.models import make_linear_regression, make_mlp_regression


@dataclass(frozen=True)
class RegressionLLC:
    """LLC of linear regression: the SGLD estimate (mean, SE over chains, R̂), the exact
    posterior value, and the value under the ε-discretized chain's stationary law."""

    estimate: float
    standard_error: float
    rhat: float
    exact: float
    discretized: float
    step_size: float


def regression_llc(progress: bool | None = None) -> RegressionLLC:
    """LLC of linear regression (n = 100, d = 3; ε 2e-3, nβ 10, γ 1, 16 chains × 4,000
    draws after 1,000 burn-in) against its exact answers."""
    loss_fn, params, data = make_linear_regression(n=100, d=3)
    eps, n_beta, gamma, chains = 2e-3, 10.0, 1.0, 16
    config = SamplerConfig(
        step_size=eps,
        n_beta=n_beta,
        localization=gamma,
        num_chains=chains,
        num_draws=4000,
        num_burnin=1000,
        batch_size=None,
    )
    X, y, w = data[0].numpy(), data[1].numpy(), params["w"].numpy()
    loss = ka.mean_squared_residual(X, y, w)
    exact = n_beta * 0.5 * np.trace(loss.A @ ka.localized_gaussian(loss, n_beta, gamma).cov)
    chain_law = ka.localized_gaussian(loss, n_beta, gamma, step_size=eps).cov
    discretized = n_beta * 0.5 * np.trace(loss.A @ chain_law)
    result = estimate_llc(loss_fn, params, data, config, progress=progress)
    return RegressionLLC(
        estimate=result.mean,
        standard_error=result.std / np.sqrt(chains),
        rhat=result.rhat,
        exact=float(exact),
        discretized=float(discretized),
        step_size=eps,
    )


def mlp_llc_and_chi(progress: bool | None = None) -> tuple[LLCResult, xr.DataArray]:
    """LLC of the MLP, and χ of its two layers toward 8 training examples."""
    loss_fn, params, data = make_mlp_regression()
    config = SamplerConfig(
        step_size=3e-4,
        n_beta=50.0,
        localization=100.0,
        num_chains=8,
        num_draws=1000,
        num_burnin=500,
        batch_size=64,
    )
    result = estimate_llc(loss_fn, params, data, config, progress=progress)
    ones = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    components = {
        "hidden": {"w1": ones["w1"], "b1": ones["b1"]},
        "readout": {"w2": ones["w2"], "b2": ones["b2"]},
    }
    probes = tuple(t[:8] for t in data)
    chi = estimate_susceptibilities(
        loss_fn, params, data, probes, components, config, progress=progress
    )
    return result, chi
