"""The intervention solver and linear response, against exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.estimators.decomposition import decompose
from patterning_core.estimators.intervention import (
    extrapolate_by_class,
    mode_target,
    predicted_response,
    solve_intervention,
    weighted_loss,
    weights_from_intervention,
    with_weights,
)
from patterning_core.toys import known_answers as ka
from patterning_core.toys.models import make_linear_regression


def random_chi(components=4, units=30, seed=0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.normal(size=(components, units)),
        dims=("component", "unit"),
        coords={
            "component": [f"c{i}" for i in range(components)],
            "unit": np.arange(units),
            "pattern_class": ("unit", np.array(["a", "b", "c"] * 10)),
        },
    )


def test_solution_reaches_the_target_with_minimum_norm():
    chi, n_beta = random_chi(), 30.0
    target = {"c0": 1.0, "c2": -0.5}
    dh = solve_intervention(chi, target, n_beta, rcond=0)
    np.testing.assert_allclose(
        predicted_response(chi, dh, n_beta).values, [1.0, 0, -0.5, 0], atol=1e-10
    )
    m = chi.values
    minimum_norm = m.T @ np.linalg.solve(m @ m.T, np.array([1.0, 0, -0.5, 0])) / n_beta
    np.testing.assert_allclose(dh.values, minimum_norm, atol=1e-12)
    assert dh.attrs["kept_modes"] == 4


def test_truncation_and_ridge_regularize_small_modes():
    chi = random_chi()
    chi[3] = chi[2] + 1e-9 * chi[1]  # nearly dependent rows
    dh_trunc = solve_intervention(chi, {"c3": 1.0}, 1.0, rcond=1e-6)
    assert dh_trunc.attrs["kept_modes"] == 3
    dh_pinv = solve_intervention(chi, {"c3": 1.0}, 1.0, rcond=0)
    dh_ridge = solve_intervention(chi, {"c3": 1.0}, 1.0, rcond=0, ridge=1e-3)
    assert np.linalg.norm(dh_trunc) < 1e-3 * np.linalg.norm(dh_pinv)
    assert np.linalg.norm(dh_ridge) < 1e-3 * np.linalg.norm(dh_pinv)
    with pytest.raises(ValueError, match="unknown component"):
        solve_intervention(chi, {"c9": 1.0}, 1.0)


def test_weights_policies():
    dh = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    for policy in ("clip", "shift"):
        rho = weights_from_intervention(dh, alpha=1.5, negative=policy)
        assert rho.min() >= 0 and rho.mean() == pytest.approx(1.0)
        assert np.all(np.diff(rho) >= 0)  # order of dh preserved
    small = weights_from_intervention(dh, alpha=0.1)
    np.testing.assert_allclose(small, 1 + 0.1 * dh / 2)  # linear regime: no rule applies
    with pytest.raises(ValueError, match="'clip' or 'shift'"):
        weights_from_intervention(dh, 1.0, negative="drop")


def test_weights_floor_and_counts():
    dh = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    clipped = weights_from_intervention(dh, alpha=3.0, floor=0.1)
    raw = np.maximum(1 + 3.0 * dh / 2, 0.1)
    np.testing.assert_allclose(clipped, raw / raw.mean())
    shifted = weights_from_intervention(dh, alpha=3.0, negative="shift", floor=0.1)
    assert shifted.min() / shifted.max() == pytest.approx(0.1 / (0.1 + 6.0))
    # One entry per group of units: mean 1 over the units, as if each unit had its own entry.
    counts = np.array([5, 1, 1, 1, 2])
    grouped = weights_from_intervention(dh, alpha=3.0, floor=0.1, counts=counts)
    per_unit = weights_from_intervention(np.repeat(dh, counts), alpha=3.0, floor=0.1)
    np.testing.assert_allclose(np.repeat(grouped, counts), per_unit)
    assert counts @ grouped == pytest.approx(counts.sum())
    with pytest.raises(ValueError, match="floor"):
        weights_from_intervention(dh, 1.0, floor=-0.1)
    with pytest.raises(ValueError, match="counts"):
        weights_from_intervention(dh, 1.0, counts=np.ones(3))


def test_class_extrapolation_fit():
    chi = random_chi()
    dh = xr.DataArray(
        np.tile([1.0, -1.0, 0.0], 10), dims="unit", coords={"pattern_class": chi.pattern_class}
    )
    fit = extrapolate_by_class(dh)
    assert fit.class_means == {"a": 1.0, "b": -1.0, "c": 0.0} and fit.r2 == pytest.approx(1)
    np.testing.assert_array_equal(fit.predict(["b", "a", "zzz"]), [-1.0, 1.0, 0.0])
    noisy = dh + xr.DataArray(np.random.default_rng(0).normal(0, 1, 30), dims="unit")
    assert 0 < extrapolate_by_class(noisy.assign_coords(pattern_class=chi.pattern_class)).r2 < 1


def test_mode_target_follows_loadings():
    chi = random_chi()
    modes = decompose(chi, by="none")
    target = mode_target(modes, 1, sign=-1)
    np.testing.assert_allclose(list(target.values()), -modes.component_loading.sel(mode=1).values)


def test_linear_response_is_exact_to_first_order_on_a_gaussian_posterior():
    """Re-weight the units of linear regression by ρ = 1 + α·w (mean 1); the exact change
    of ⟨φ⟩ matches nβ·Σ_z χ_z·dh_z with dh_z = (ρ_z − 1)/n, with error O(α²)."""
    _, params, (X, y) = make_linear_regression(n=40, d=3, seed=2)
    n, n_beta = len(y), 10.0
    exact = ka.RegressionResponse.of(X.numpy(), y.numpy(), params["w"].numpy(), n_beta, 1.0)
    chi = exact.chi()
    direction = np.random.default_rng(0).normal(size=n)
    direction -= direction.mean()

    def exact_change(alpha: float) -> float:
        return exact.change(1 + alpha * direction)

    errors = []
    for alpha in (1e-3, 1e-2, 1e-1):
        predicted = n_beta * chi @ (alpha * direction / n)
        errors.append(abs(exact_change(alpha) - predicted) / abs(predicted))
    assert errors[0] < 1e-2
    # Second-order error: relative error grows ~linearly with α (×10 per decade, ±50 %).
    assert 5 < errors[1] / errors[0] < 15 and 5 < errors[2] / errors[1] < 15


def test_weighted_loss_scales_each_unit_by_its_normalized_weight():
    loss_fn, params, (X, y) = make_linear_regression(n=8, d=2)
    weights = torch.arange(1, 9, dtype=X.dtype)
    rho, Xw, yw = with_weights((X, y), weights)
    np.testing.assert_allclose(rho.numpy(), (weights / weights.mean()).numpy(), rtol=1e-6)
    index = torch.tensor([0, 7])
    out = weighted_loss(loss_fn)(params, (rho[index], Xw[index], yw[index]))
    np.testing.assert_allclose(
        out.numpy(),
        (loss_fn(params, (X[index], y[index])) * weights[index] / weights.mean()).numpy(),
        rtol=1e-6,
    )
    # No weights: the plain loss.
    plain = weighted_loss(loss_fn)(params, with_weights((X, y), None))
    np.testing.assert_allclose(plain.numpy(), loss_fn(params, (X, y)).numpy())


def test_weighted_loss_takes_weights_with_the_batch():
    loss_fn, params, (X, y) = make_linear_regression(n=8, d=2)
    weights = torch.arange(1, 9, dtype=X.dtype)
    rho, *data = with_weights((X, y), weights)
    assert rho.dtype == X.dtype and float(rho.mean()) == pytest.approx(1.0)
    out = weighted_loss(loss_fn)(params, (rho, *data))
    np.testing.assert_allclose(out.numpy(), (loss_fn(params, (X, y)) * rho).numpy())
    plain, *_ = with_weights((X, y), None)
    torch.testing.assert_close(plain, torch.ones(8))


def test_sampled_linear_response_matches_prediction_and_exact_change(tmp_path):
    """SGLD with re-weighted data (common random numbers) on linear regression: for small
    α the measured change of ⟨φ⟩ agrees with nβ·χ·dh and with the exact posterior change;
    the plot is written."""
    from patterning_core.estimators.linear_response import linear_response_curve
    from patterning_core.report.plots import plot_linear_response
    from patterning_core.sampling.sgld import SamplerConfig

    loss_fn, params, (X, y) = make_linear_regression(n=40, d=3, seed=2)
    n_beta, gamma, eps = 10.0, 1.0, 1e-2
    exact = ka.RegressionResponse.of(
        X.numpy(), y.numpy(), params["w"].numpy(), n_beta, gamma, step_size=eps
    )
    chi = exact.chi()
    direction = np.sign(chi)  # up-weight the units that raise φ: a large, clean response
    config = SamplerConfig(
        step_size=eps,
        n_beta=n_beta,
        localization=gamma,
        num_chains=16,
        num_draws=2000,
        num_burnin=300,
        batch_size=None,
        seed=0,
    )
    points = linear_response_curve(
        loss_fn,
        params,
        (X, y),
        {"w": torch.ones(3, dtype=bool)},
        chi,
        direction,
        [0.05, 0.2],
        config,
    )

    def exact_change(alpha: float) -> float:
        return exact.change(1 + alpha * (direction - direction.mean()))

    for point in points:
        assert point.predicted > 0
        # The measured change is a Monte-Carlo estimate of the exact change: 4 SE.
        assert abs(point.measured - exact_change(point.alpha)) < 4 * point.measured_se
        assert point.measured_se < 0.2 * abs(point.measured)
    small = points[0]
    assert abs(small.measured - small.predicted) < 4 * small.measured_se + 0.05 * small.predicted
    assert plot_linear_response(points, tmp_path / "lr.png").exists()


def test_linear_response_on_per_token_units():
    """Per-token units (a transformer's [n, T − 1] losses): weights of that shape, the
    prediction nβ·Σ χ (ρ − 1)/N over all N token units, and α = 0 reproducing the plain run
    exactly (common random numbers)."""
    from patterning_core.estimators.linear_response import linear_response_curve
    from patterning_core.model.transformer import components, init_params, make_loss_fn, preset
    from patterning_core.sampling.sgld import SamplerConfig

    cfg = preset("tiny")
    params = init_params(cfg, 0)
    tokens = torch.randint(0, cfg.d_vocab, (8, 12), generator=torch.Generator().manual_seed(0))
    direction = np.random.default_rng(0).choice([-1.0, 1.0], size=(8, 11))
    chi = np.random.default_rng(1).normal(size=(8, 11))
    config = SamplerConfig(
        step_size=1e-4, n_beta=5.0, localization=100.0, num_chains=2, num_draws=3, batch_size=4
    )
    points = linear_response_curve(
        make_loss_fn(cfg),
        params,
        (tokens,),
        components(cfg)["L1H0"],
        chi,
        direction,
        [0.0, 0.5],
        config,
    )
    assert points[0].measured == 0.0 and points[0].predicted == 0.0
    centred = direction - direction.mean()
    assert points[1].predicted == pytest.approx(5.0 * np.sum(chi * 0.5 * centred) / chi.size)
    assert np.isfinite(points[1].measured)
    with pytest.raises(ValueError, match="shape of the loss units"):
        linear_response_curve(
            make_loss_fn(cfg),
            params,
            (tokens,),
            components(cfg)["L1H0"],
            chi[:, :5],
            direction[:, :5],
            [0.1],
            config,
        )


def test_two_run_linear_check_against_the_exact_restricted_response():
    """Linear regression (Gaussian laws, known in closed form), re-weighted along the exact
    χ of all weights: for each component the check's two predictions (two-run χ and the
    restricted run's own χ, both estimated) and its measured change of the restricted
    run's ⟨φ⟩ agree with their exact values (stationary law of the chain at ε) within 4 SE
    of each; and the exact values say what the check is for: the restricted χ predicts the
    restricted change to second order in α, while the two-run χ of a restricted component
    (centred by the full run) predicts even its sign wrong here."""
    from patterning_core.estimators.linear_response import two_run_linear_check
    from patterning_core.sampling.sgld import SamplerConfig

    loss_fn, params, (X, y) = make_linear_regression(n=40, d=3, seed=2)
    n_beta, gamma, eps = 10.0, 1.0, 1e-2
    config = SamplerConfig(
        step_size=eps,
        n_beta=n_beta,
        localization=gamma,
        num_chains=32,
        num_draws=2000,
        num_burnin=300,
        batch_size=None,
        seed=0,
    )
    exact = {
        name: ka.RegressionResponse.of(
            X.numpy(), y.numpy(), params["w"].numpy(), n_beta, gamma, eps, coords
        )
        for name, coords in (("all", None), ("w0w1", (0, 1)))
    }
    direction = exact["all"].chi()
    components = {"all": {"w": torch.ones(3, dtype=bool)}}
    components["w0w1"] = {"w": torch.tensor([True, True, False])}
    rows = two_run_linear_check(
        loss_fn, params, (X, y), components, direction, config, fractions=[0.3]
    )
    assert [r["component"] for r in rows] == ["all", "w0w1"]
    truth = {}
    for row in rows:
        law = exact[row["component"]]
        rho = 1 + row["alpha"] * (direction - direction.mean())
        assert rho.min() == pytest.approx(0.7)  # 0.3 of the way to a zero weight
        dh = (rho - 1) / len(rho)
        truth[row["component"]] = {
            "measured": law.change(rho),
            "predicted": n_beta * law.two_run_chi() @ dh,
            "predicted_restricted": n_beta * law.chi() @ dh,
        }
        for key, value in truth[row["component"]].items():
            se = row[f"{key}_se"]
            assert se < 0.1 * abs(truth[row["component"]]["measured"]), "must resolve it"
            assert abs(row[key] - value) < 4 * se, key
        assert row["ratio"] == pytest.approx(row["measured"] / row["predicted"])
    # Every weight moving: both estimators are the exact derivative (ratio 1 + O(α)).
    full, part = truth["all"], truth["w0w1"]
    assert full["predicted"] == pytest.approx(full["predicted_restricted"], rel=1e-9)
    assert full["measured"] / full["predicted"] == pytest.approx(1.0, abs=0.05)
    # A restricted component: its own χ still is; the two-run χ is not, here not in sign.
    assert part["measured"] / part["predicted_restricted"] == pytest.approx(1.0, abs=0.05)
    assert part["measured"] / part["predicted"] < 0
