"""Demonstration 0, the toy model of superposition: the pieces against known answers, and
the flow at tiny size (the full run, which checks the targets, is a ``slow`` test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from patterning_core.experiments.toy_superposition.after_retraining import (
    after_retraining_rows,
    after_targets,
)
from patterning_core.experiments.toy_superposition.configuration import read_configuration
from patterning_core.experiments.toy_superposition.model import (
    ToyConfig,
    importances,
    init_weights,
    make_dataset,
    per_sample_loss,
    train_seeds,
)
from patterning_core.experiments.toy_superposition.patterning import (
    chi_weights,
    control_weights,
    dose,
    dose_to_reach,
    loss_susceptibilities,
    naive_weights,
    norm_susceptibilities,
    wilson_interval,
)
from patterning_core.sampling import SamplerConfig


def polygon(n: int, members: list[int], rotation: float, dropped_norm: float = 0.2):
    """W [2, n]: ``members`` on a regular k-gon (unit norm) in that angular order, every
    other feature at norm ``dropped_norm`` in an arbitrary direction."""
    W = np.zeros((2, n))
    k = len(members)
    for r, i in enumerate(members):
        a = rotation + 2 * math.pi * r / k
        W[:, i] = (math.cos(a), math.sin(a))
    for i in set(range(n)) - set(members):
        W[:, i] = dropped_norm * np.array([math.cos(7.0 * i), math.sin(7.0 * i)])
    return W


@pytest.mark.parametrize("members", [[0, 1], [2, 0, 5], [3, 1, 0, 4], [0, 1, 2, 3, 5], [*range(6)]])
def test_readout_of_hand_built_k_gons(members):
    rng = np.random.default_rng(len(members))
    for rotation in rng.uniform(-math.pi, math.pi, size=5):
        conf = read_configuration(polygon(6, members, rotation))
        assert conf.represented == tuple(sorted(members))
        assert conf.k == len(members)
        assert conf.regular and conf.max_gap_error < 1e-9
        # the angular order is the polygon's, up to where the cycle starts
        start = conf.order.index(members[0])
        assert list(conf.order[start:] + conf.order[:start]) == members
        assert conf.label.startswith(f"{len(members)}-gon")


def test_readout_tolerances_and_irregular_polygons():
    members = [0, 1, 2, 3, 4]
    W = polygon(6, members, 0.3)
    # jitter every vertex by at most 0.1·(2π/k): a gap changes by at most 0.2·(2π/k),
    # inside the 0.25 tolerance
    k, rng = 5, np.random.default_rng(0)
    for i in members:
        a = math.atan2(W[1, i], W[0, i]) + rng.uniform(-0.1, 0.1) * 2 * math.pi / k
        W[:, i] = (math.cos(a), math.sin(a))
    conf = read_configuration(W)
    assert conf.regular and conf.max_gap_error <= 0.2 + 1e-9
    # two features in one direction: gaps 0 and 2·(2π/k) → error 1, irregular
    W2 = polygon(6, [0, 1, 2, 3], 0.0)
    W2[:, 4] = W2[:, 0]
    assert not read_configuration(W2).regular
    # the threshold: a column just above 0.5 is represented, just below it is not
    W3 = polygon(6, [0, 1, 2], 0.0)
    W3[:, 3] = (0.51, 0.0)
    W3[:, 4] = (0.0, 0.49)
    assert read_configuration(W3).represented == (0, 1, 2, 3)


def test_hand_written_gradient_matches_autograd():
    """One plain gradient step (momentum 0) of ``train_seeds`` equals W − lr·∇L, ∇L by
    autograd on the ρ-weighted mean loss."""
    cfg = ToyConfig(n_samples=64, steps=1, momentum=0.0, lr=0.05)
    x = make_dataset(cfg)
    rho = torch.rand(64, generator=torch.Generator().manual_seed(1)) + 0.5
    W0, b0 = init_weights(cfg, [3, 4])
    W0 = W0 * 5  # large enough that many units are active
    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    loss = (per_sample_loss(W, b, x, importances(cfg)) * rho / rho.mean()).mean(-1).sum()
    gW, gb = torch.autograd.grad(loss, (W, b))
    cfg5 = cfg.replace(init_std=cfg.init_std * 5)
    W1, b1 = train_seeds(cfg5, x, [3, 4], weights=rho)
    torch.testing.assert_close(W1, W0 - 0.05 * gW, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b1, b0 - 0.05 * gb, rtol=1e-5, atol=1e-6)


def test_a_seed_trains_the_same_in_any_batch():
    cfg = ToyConfig(n_samples=128, steps=60)
    x = make_dataset(cfg)
    together, _ = train_seeds(cfg, x, [3, 5, 8])
    alone, _ = train_seeds(cfg, x, [5])
    torch.testing.assert_close(together[1], alone[0], rtol=1e-4, atol=1e-5)
    doubled, _ = train_seeds(cfg, x, [5], weights=torch.full((128,), 2.0))
    torch.testing.assert_close(doubled, alone, rtol=1e-5, atol=1e-6)  # ρ is normalized


def test_weights_conserve_mass_and_share_one_dose():
    rng = np.random.default_rng(0)
    import xarray as xr

    chi = xr.DataArray(rng.normal(size=(3, 50)), dims=("component", "unit"))
    chi = chi.assign_coords(component=["norm0", "norm1", "norm2"])
    for alpha in (0.3, 1.0, 3.0):  # 3.0 clips negative weights at 0
        dh, rho = chi_weights(chi, {"norm1": 1.0}, 100.0, alpha)
        assert abs(rho.mean() - 1) < 1e-12 and rho.min() >= 0
        d = dose(rho)
        perm = control_weights(rho, seed=1)
        np.testing.assert_array_equal(np.sort(perm), np.sort(rho))
        assert not np.array_equal(perm, rho) and dose(perm) == pytest.approx(d, abs=1e-12)
        active = rng.random(50) < 0.3
        naive = naive_weights(active, d)
        assert naive.mean() == pytest.approx(1.0, abs=1e-12) and naive.min() > 0
        assert dose(naive) == pytest.approx(d, abs=1e-12)
        assert naive[active].min() > 1 > naive[~active].max()
    # the minimum-norm dh meets the target exactly: nβ·χ·dh = dμ
    np.testing.assert_allclose(100.0 * chi.values @ dh, [0, 1, 0], atol=1e-10)


def test_wilson_interval_and_dose_to_reach():
    # known values of the Wilson score interval
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert dose_to_reach([(0.0, 0.4), (0.1, 0.6), (0.2, 0.9)], 0.7) == pytest.approx(0.1333, 1e-3)
    assert dose_to_reach([(0.0, 0.4), (0.1, 0.5)], 0.7) is None


SMALL_SAMPLER = SamplerConfig(
    step_size=1e-4,
    n_beta=100.0,
    localization=1000.0,
    num_chains=2,
    num_draws=150,
    num_burnin=50,
    batch_size=None,
)


def test_chi_signs_toward_a_features_own_samples():
    """Signs the theory predicts.

    Localized loss of a represented feature's column, at a trained model: near a minimum
    w* the posterior of the column is close to Gaussian, δ ~ N(0, Σ), φ ≈ ½δᵀHδ and
    ℓ_z ≈ ℓ_z* + g_zᵀδ + ½δᵀH_zδ, so Cov[φ, ℓ_z − L] = ½ tr(HΣ(H_z − H)Σ) (the linear
    term has no covariance with a quadratic form of a centred Gaussian). This is the
    covariance under the restricted run, the ``restricted`` reading (the two-run estimator
    centres by the full run's means and need not keep the sign). A sample where
    feature j is active depends on column j directly (H_z on it ≈ 2I_j x_j²·(…) ≥ the
    average H, which is diluted by the ~90 % of samples without j), hence χ_z =
    −Cov < 0 there: the column *expresses* its samples; a sample without j has H_z below
    the average on column j, so χ_z > 0.

    Representation norm at an early checkpoint (‖W_j‖ < 1, still growing): for a sample
    where only j is active, ℓ_z = I_j (ReLU(‖W_j‖² x_j + b_j) − x_j)² falls as ‖W_j‖ rises,
    so up-weighting it raises ‖W_j‖: χ_z(‖W_j‖) > 0 (to first order χ_z ≈
    −∇‖W_j‖ᵀ Σ ∇ℓ_z, a positive multiple of −∂ℓ_z/∂‖W_j‖).
    """
    cfg = ToyConfig(n_samples=256, steps=400)
    x = make_dataset(cfg)
    W, b = train_seeds(cfg, x, [0, 1])
    j = 0  # the most important feature: represented by every seed
    assert all(j in read_configuration(w.numpy()).represented for w in W)
    chi = loss_susceptibilities(cfg, x, W, b, SMALL_SAMPLER)["restricted"]
    for j in range(cfg.n_features):  # every represented feature
        if all(j in read_configuration(w.numpy()).represented for w in W):
            active = (x[:, j] > 0).numpy()
            row = chi.values[j]
            assert row[active].mean() < 0 < row[~active].mean()

    active = (x[:, j] > 0).numpy()
    Wc, bc = train_seeds(cfg, x, [2, 3, 4, 5], steps=20)
    assert float(Wc.norm(dim=1)[:, j].max()) < 1
    res = norm_susceptibilities(cfg, x, Wc, bc, SMALL_SAMPLER)
    alone = active & ((x > 0).sum(1) == 1).numpy()
    assert res.chi.values[j][alone].mean() > 0
    assert res.per_chain.sizes["chain"] == 2


def _after_inputs(chi_change: float, control_change: float, spread: float):
    """Hand-made re-measurements: 2 features (target 1), 3 units, 2 steps, 4 chains, 5
    seeds; χ after equals χ before but for the χ condition at step 9, whose target row is
    orthogonal to the original."""
    before = np.array([[1.0, 0.0, -1.0], [2.0, -1.0, -1.0]])
    weights = {"chi": np.array([1.5, 0.75, 0.75]), "control": np.array([0.75, 1.5, 0.75])}
    chain_noise = np.array([0.01, -0.01, 0.02, -0.02])
    seed_noise = spread * np.array([1.0, -1.0, 0.5, -0.5, 0.0])
    measured = {}
    for step in (1, 9):
        for name, change in (("baseline", 0.0), ("chi", chi_change), ("control", control_change)):
            post = np.full((4, 2), 0.5)
            post[:, 1] += change + (chain_noise if name != "baseline" else 0.0)
            norms = np.full((5, 2), 0.5)
            norms[:, 1] += change + (seed_noise if name != "baseline" else 0.0)
            chi = before.copy()
            if name == "chi" and step == 9:
                chi[1] = [0.0, 1.0, -1.0]  # ⟂ [2, −1, −1]
            measured[(name, step)] = {"posterior": post, "seed_norms": norms, "chi": chi}
    return before, weights, measured


def test_after_retraining_rows_against_hand_computed_values():
    before, weights, measured = _after_inputs(0.2, 0.01, spread=0.05)
    rows = after_retraining_rows(before, 10.0, weights, measured, target=1)
    by = {(r["condition"], r["step"]): r for r in rows}
    chi = by[("chi", 1)]
    assert chi["change"] == pytest.approx(0.2)  # chain noise has mean 0
    assert chi["change_se_chains"] == pytest.approx(np.std([0.01, -0.01, 0.02, -0.02], ddof=1) / 2)
    assert chi["change_se_seeds"] == pytest.approx(
        0.05 * np.std([1, -1, 0.5, -0.5, 0], ddof=1) / np.sqrt(5)
    )
    # nβ·χ·(ρ − 1)/N = 10 · (2·0.5 + (−1)(−0.25) + (−1)(−0.25)) / 3 = 5
    assert chi["predicted_linear"] == pytest.approx(5.0)
    assert chi["response_after"] == pytest.approx(5.0) and chi["chi_row_cosine"] == pytest.approx(1)
    assert by[("chi", 9)]["chi_row_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert by[("chi", 9)]["response_after"] == pytest.approx(0.0, abs=1e-12)  # ρ − 1 ∝ before
    assert by[("baseline", 9)]["change"] == 0 and by[("baseline", 9)]["predicted_linear"] == 0
    assert by[("control", 1)]["change_others"] == {"0": 0.0}
    assert after_targets(rows)["met"]


@pytest.mark.parametrize(
    ("chi_change", "control_change", "spread"),
    [
        (0.2, 0.06, 0.05),  # the control moves the target by 0.3 of χ's rise
        (-0.2, 0.0, 0.05),  # χ moves it the wrong way
        (0.02, 0.0, 0.05),  # χ's rise is within 3 standard errors of the seeds' spread
    ],
)
def test_after_retraining_check_can_fail(chi_change, control_change, spread):
    before, weights, measured = _after_inputs(chi_change, control_change, spread)
    rows = after_retraining_rows(before, 10.0, weights, measured, target=1)
    assert not after_targets(rows)["met"]


# ------------------------------------------------------------------------------ flow

TINY = {
    "seeds": 4,
    "chunk": 2,
    "chi_seeds": 2,
    "chi_step": 10,
    "alpha": 1.0,
    "sweep": [0.5],
    "response_alphas": [0.5],
    "llc_per_configuration": 1,
    "sampler": {**SMALL_SAMPLER.to_dict(), "num_draws": 20, "num_burnin": 10},
    "llc_sampler": {**SMALL_SAMPLER.to_dict(), "num_draws": 20, "num_burnin": 10},
    "toy": {**ToyConfig().to_dict(), "n_samples": 64, "steps": 80},
}


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_writes_results_and_a_rerun_trains_nothing(harness, tmp_path, monkeypatch):
    from flows.parameters import ToySuperpositionParameters
    from flows.toy_superposition import toy_superposition

    monkeypatch.setenv("PATTERNING_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    first = toy_superposition(ToySuperpositionParameters(**TINY, out_dir=str(out)))
    results = json.loads((out / "results.json").read_text())
    assert results["target"] == "represent feature 4"
    assert set(results["conditions"]) == {"baseline", "chi", "control", "naive"}
    assert all(c["n"] == 4 for c in results["conditions"].values())
    assert {"alpha", "predicted", "measured"} <= set(results["linear_response"][0])
    after = results["chi_after_retraining"]["rows"]
    assert {(r["condition"], r["step"]) for r in after} == {
        (c, s) for c in ("baseline", "chi", "control", "naive") for s in (10, 80)
    }
    assert all(r["change"] == 0 for r in after if r["condition"] == "baseline")
    assert sorted((tmp_path / "home").rglob("chi_after/*.nc"))  # χ written next to the run
    for name in ("report.md", "polygons.png", "fractions.png", "linear_response.png"):
        assert (out / name).is_file()
    seed_files = sorted((tmp_path / "home").rglob("seed_*.json"))
    assert len(seed_files) == 4 * 7  # baseline + 3 methods × 2 α
    stamps = [f.stat().st_mtime_ns for f in seed_files]
    second = toy_superposition(ToySuperpositionParameters(**TINY, out_dir=str(out)))
    assert second["conditions"] == first["conditions"]
    assert [f.stat().st_mtime_ns for f in seed_files] == stamps


def test_cli_refuses_bad_parameters(tmp_path: Path, capsys) -> None:
    from flows.cli import main as cli_main

    assert cli_main(["toy-superposition", "--target", "9", "--out", str(tmp_path / "x")]) == 2
    assert "target" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_full_demonstration_meets_its_targets(harness, tmp_path):
    """The full run (100 seeds per condition): χ raises the fraction of seeds representing
    the target feature by ≥ 0.3 with disjoint Wilson intervals; the permuted control moves
    it by < 0.1."""
    from flows.parameters import ToySuperpositionParameters
    from flows.toy_superposition import toy_superposition

    result = toy_superposition(ToySuperpositionParameters(out_dir=str(tmp_path / "out")))
    t = result["targets"]
    assert result["conditions"]["baseline"]["n"] >= 100
    assert t["chi_rise"] >= 0.3 and t["chi_intervals_disjoint"]
    assert abs(t["control_shift"]) < 0.1
    assert t["chi_after_retraining_met"]
    assert result["wall_seconds"] < 600
