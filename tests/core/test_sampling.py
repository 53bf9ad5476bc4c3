"""Sampler mechanics: validation, errors, invariances, reproducibility, shard merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterning_core.estimators.llc import estimate_llc
from patterning_core.estimators.susceptibility import (
    chi_from_stats,
    merge_stats,
    sample_susceptibility_stats,
)
from patterning_core.sampling.diagnostics import integrated_autocorrelation_time, split_rhat
from patterning_core.sampling.sgld import ConfigError, SamplerConfig, SamplerDivergence
from patterning_core.sampling.stats import CoMomentAccumulator, pool_comoments
from patterning_core.toys.models import make_linear_regression, make_mlp_regression


@pytest.fixture(scope="module")
def mlp():
    return make_mlp_regression(n=128, d_in=4, hidden=8, train_steps=100)


def small_config(**changes) -> SamplerConfig:
    base = dict(
        step_size=1e-4,
        n_beta=20.0,
        localization=100.0,
        num_chains=3,
        num_draws=20,
        num_burnin=5,
        steps_between_draws=2,
        batch_size=16,
        seed=7,
    )
    return SamplerConfig(**{**base, **changes})


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("step_size", -1e-3),
        ("step_size", 0.0),
        ("step_size", float("nan")),
        ("n_beta", 0),
        ("localization", -1.0),
        ("num_chains", 0),
        ("num_draws", 0),
        ("num_burnin", -1),
        ("steps_between_draws", 0),
        ("batch_size", 0),
        ("num_chains", 2.5),
        ("seed", -3),
        ("preconditioner", "adam"),
        ("rmsprop_alpha", 1.0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplerConfig(**{field: value})


def test_config_round_trips_and_rejects_unknown_settings():
    cfg = small_config()
    assert SamplerConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_steps == 5 + 20 * 2
    with pytest.raises(ConfigError, match="stepsize"):
        SamplerConfig.from_dict({"stepsize": 1e-3})


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_are_clear_errors(mlp):
    loss_fn, params, (X, y) = mlp
    cfg = small_config()
    with pytest.raises(ConfigError, match="same length along dim 0"):
        estimate_llc(loss_fn, params, (X, y[:-1]), cfg)
    with pytest.raises(ConfigError, match="unknown parameter 'w3'"):
        estimate_llc(loss_fn, params, (X, y), cfg, restrict={"w3": torch.ones(3, dtype=bool)})
    with pytest.raises(ConfigError, match="has shape"):
        estimate_llc(loss_fn, params, (X, y), cfg, restrict={"w1": torch.ones(3, dtype=bool)})
    with pytest.raises(ConfigError, match="select no coordinate"):
        estimate_llc(
            loss_fn,
            params,
            (X, y),
            cfg,
            restrict={"b1": torch.zeros_like(params["b1"], dtype=bool)},
        )
    with pytest.raises(ConfigError, match=r"shape \[B\] or \[B, T\]"):
        estimate_llc(lambda p, b: loss_fn(p, b).mean(), params, (X, y), cfg)
    with pytest.raises(ConfigError, match=r"shape \[B\] or \[B, T\]"):
        estimate_llc(lambda p, b: loss_fn(p, b)[:1], params, (X, y), cfg)
    with pytest.raises(ConfigError, match="components is empty"):
        sample_susceptibility_stats(loss_fn, params, (X, y), (X[:2], y[:2]), {}, cfg)
    comps = {"hidden": {"w1": torch.ones_like(params["w1"], dtype=bool)}}
    with pytest.raises(ConfigError, match="unknown component"):
        sample_susceptibility_stats(
            loss_fn, params, (X, y), (X[:2], y[:2]), comps, cfg, component_names=["hiden"]
        )


def test_divergence_names_chain_step_and_fix(mlp):
    loss_fn, params, data = mlp
    with pytest.raises(SamplerDivergence, match=r"chain \d+, step \d+.*Reduce step_size") as err:
        estimate_llc(
            loss_fn, params, data, small_config(step_size=50.0, localization=0.0, num_draws=200)
        )
    assert err.value.run == "llc" and err.value.step > 0


# ---------------------------------------------------------------- invariances


def test_same_seed_same_numbers_and_other_seed_differs(mlp):
    loss_fn, params, data = mlp
    a = estimate_llc(loss_fn, params, data, small_config())
    b = estimate_llc(loss_fn, params, data, small_config())
    c = estimate_llc(loss_fn, params, data, small_config(seed=8))
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    assert not np.allclose(a.loss_trace, c.loss_trace)


def test_llc_invariant_under_loss_scale_and_inverse_temperature(mlp):
    """LLC(2·loss, nβ/2) = LLC(loss, nβ): the drift nβ∇L and nβ·ΔL are unchanged."""
    loss_fn, params, data = mlp
    for precond in ("sgld", "rmsprop"):
        cfg = small_config(preconditioner=precond)
        a = estimate_llc(loss_fn, params, data, cfg)
        b = estimate_llc(
            lambda p, batch: 2 * loss_fn(p, batch), params, data, cfg.replace(n_beta=cfg.n_beta / 2)
        )
        np.testing.assert_allclose(b.per_chain, a.per_chain, rtol=1e-5, atol=1e-7)


def test_restricted_llc_equals_lower_dimensional_model():
    """Moving only w[0] of a 3-D regression is the sampler of the 1-D model."""
    loss_fn, params, (X, y) = make_linear_regression(n=64, d=3, seed=1)
    w = params["w"]
    cfg = SamplerConfig(
        step_size=1e-3,
        n_beta=8.0,
        localization=1.0,
        num_chains=2,
        num_draws=50,
        batch_size=16,
        seed=0,
    )
    restricted = estimate_llc(
        loss_fn, params, (X, y), cfg, restrict={"w": torch.tensor([True, False, False])}
    )
    offset = X[:, 1:] @ w[1:]

    def loss_1d(p, batch):
        xb, yb, ob = batch
        return 0.5 * (yb - xb[:, 0] * p["w"][0] - ob) ** 2

    lower = estimate_llc(loss_1d, {"w": w[:1].clone()}, (X, y, offset), cfg)
    np.testing.assert_allclose(lower.loss_trace, restricted.loss_trace, rtol=1e-12)
    assert lower.mean == pytest.approx(restricted.mean, rel=1e-10)


def test_burnin_is_excluded(mlp):
    loss_fn, params, data = mlp
    with_burnin = estimate_llc(loss_fn, params, data, small_config(num_burnin=10, num_draws=5))
    longer = estimate_llc(
        loss_fn, params, data, small_config(num_burnin=0, num_draws=10, steps_between_draws=2)
    )
    # Burn-in of 10 steps then draws every 2 steps = the last 5 of 10 draws every 2 steps.
    np.testing.assert_array_equal(with_burnin.loss_trace, longer.loss_trace[:, 5:])


# ---------------------------------------------------------------- shards and statistics


def test_shards_over_chains_merge_into_one_run(mlp):
    loss_fn, params, data = mlp
    comps = {
        "hidden": {"w1": torch.ones_like(params["w1"], dtype=bool)},
        "readout": {"w2": torch.ones_like(params["w2"], dtype=bool)},
    }
    probes = (data[0][:5], data[1][:5])
    cfg = small_config(num_chains=4)
    whole = sample_susceptibility_stats(loss_fn, params, data, probes, comps, cfg)
    parts = [
        sample_susceptibility_stats(loss_fn, params, data, probes, comps, cfg, chain_ids=[0, 1]),
        sample_susceptibility_stats(
            loss_fn,
            params,
            data,
            probes,
            comps,
            cfg,
            chain_ids=[2, 3],
            component_names=["hidden"],
            include_full=False,
        ),
        sample_susceptibility_stats(
            loss_fn, params, data, probes, comps, cfg, chain_ids=[2, 3], component_names=["readout"]
        ),
    ]
    merged = merge_stats(parts)
    np.testing.assert_allclose(
        chi_from_stats(merged).values, chi_from_stats(whole).values, rtol=1e-6, atol=1e-9
    )
    incomplete = merge_stats(parts[:2])
    with pytest.raises(ValueError, match="incomplete"):
        chi_from_stats(incomplete)


def test_pooled_comoments_equal_one_pass():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(3, 50))  # 3 groups of 50 draws
    x = rng.normal(size=(3, 50, 4)) + phi[..., None]
    acc = CoMomentAccumulator(3, 4)
    for t in range(50):
        acc.update(torch.from_numpy(phi[:, t]), torch.from_numpy(x[:, t]))
    got = acc.numpy()
    n, m_phi, m2, m_x, co = pool_comoments(
        got["count"], got["mean_phi"], got["m2_phi"], got["mean_x"], got["comoment"], axis=0
    )
    flat_phi, flat_x = phi.reshape(-1), x.reshape(-1, 4)
    assert n == 150
    np.testing.assert_allclose(m_phi, flat_phi.mean())
    np.testing.assert_allclose(m2, ((flat_phi - flat_phi.mean()) ** 2).sum())
    np.testing.assert_allclose(m_x, flat_x.mean(0))
    np.testing.assert_allclose(
        co, ((flat_phi - flat_phi.mean())[:, None] * (flat_x - flat_x.mean(0))).sum(0)
    )


def test_split_rhat():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(4, 1000))
    assert split_rhat(mixed) == pytest.approx(1.0, abs=0.01)
    # 1.1 is the conventional "not converged" threshold.
    stuck = mixed + np.arange(4)[:, None] * 3.0  # chains in different places
    assert split_rhat(stuck) > 1.1
    drifting = mixed + np.linspace(0, 5, 1000)  # non-stationary within chains
    assert split_rhat(drifting) > 1.1


def ar1_chains(a: float, chains: int, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((chains, draws))
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0] / np.sqrt(1 - a * a)  # start in the stationary law
    for t in range(1, draws):
        x[:, t] = a * x[:, t - 1] + noise[:, t]
    return x


@pytest.mark.parametrize("a", [0.0, 0.5, 0.8])
def test_integrated_autocorrelation_time_of_ar1(a):
    # AR(1): ρ_k = a^k, τ = (1 + a)/(1 − a) (1, 3, 9). Sokal's windowed estimator has
    # var(τ̂)/τ² ≈ 2(2M + 1)/N with window M ≈ 5τ; over 8 × 20,000 draws its relative SD
    # is ≤ 0.035, and the truncation bias 2a^(M+1)/(1 − a) is < 1e-4: tolerance 4 SD.
    tau = (1 + a) / (1 - a)
    chains = ar1_chains(a, 8, 20000, seed=3)
    window = 5 * tau
    rel_sd = np.sqrt(2 * (2 * window + 1) / chains.size)
    assert integrated_autocorrelation_time(chains) == pytest.approx(tau, rel=4 * rel_sd)
