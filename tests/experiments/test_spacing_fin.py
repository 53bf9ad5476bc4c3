"""The spacing fin's pieces: run positions of the units, and the fin metric on constructed
loadings whose answer is known."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.data.token_classes import classify
from patterning_core.estimators.decomposition import decompose
from patterning_core.experiments.spacing.fin import (
    fin_metric,
    null_level,
    position_decoding,
    run_positions,
)
from patterning_core.experiments.spacing.fin_weights import (
    class_weights,
    control_like,
    fin_classes,
    fin_weights,
    train_fin_labels,
    weights_summary,
)

STRINGS = ["<eot>", " ", "\n", "def", "x"]


def test_run_positions_count_spaces_after_a_non_space_and_skip_truncated_runs():
    #          t: 0    1    2    3     4    5    6    7
    tokens = torch.tensor([[1, 1, 3, 2, 1, 1, 1, 4], [3, 1, 4, 1, 1, 2, 1, 3]])
    pos = run_positions(tokens, STRINGS)
    assert pos.shape == (2, 7)  # unit t predicts token t + 1
    nan = np.nan
    # row 0: the run at t = 0..1 reaches the start (unknown); "\n" is not a space
    np.testing.assert_array_equal(pos[0], [nan, nan, nan, 1, 2, 3, nan])
    np.testing.assert_array_equal(pos[1], [1, nan, 1, 2, nan, 1, nan])


def _loadings(positions: np.ndarray, fin_mode: int, sign: float, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    n_modes, n = 4, positions.size
    values = rng.normal(size=(n_modes, n))
    inside = np.isfinite(positions)
    values[fin_mode - 1, inside] = sign * positions[inside] ** 2  # monotone in the position
    return xr.DataArray(values, dims=("mode", "unit"), coords={"mode": np.arange(1, n_modes + 1)})


@pytest.mark.parametrize(("fin_mode", "sign"), [(2, 1.0), (3, -1.0)])
def test_fin_metric_finds_the_mode_that_orders_spaces_by_depth(fin_mode, sign):
    rng = np.random.default_rng(1)
    positions = np.where(rng.random(600) < 0.5, rng.integers(1, 9, 600).astype(float), np.nan)
    fin = fin_metric(_loadings(positions, fin_mode, sign), positions)
    assert fin["mode"] == fin_mode
    assert fin["metric"] == pytest.approx(1.0)  # a monotone function: Spearman's ρ = ±1
    assert np.sign(fin["rho"]) == sign
    # the other modes are noise: within a few null levels of 0
    others = [abs(r) for m, r in fin["per_mode"].items() if m != fin_mode]
    assert max(others) < 3 * fin["null"]
    assert fin["space_units"] == int(np.isfinite(positions).sum())


def test_fin_metric_of_pure_noise_stays_near_its_null_level():
    """The null level √(2 ln(2k)/m) bounds the largest |ρ| of k unrelated modes: over 50
    draws, the mean of the maximum must lie below it and above a third of it."""
    rng = np.random.default_rng(2)
    positions = rng.integers(1, 9, 1000).astype(float)
    maxima = []
    for seed in range(50):
        noise = xr.DataArray(
            np.random.default_rng(seed).normal(size=(8, 1000)),
            dims=("mode", "unit"),
            coords={"mode": np.arange(1, 9)},
        )
        maxima.append(fin_metric(noise, positions)["metric"])
    level = null_level(1000, 8)
    assert level / 3 < np.mean(maxima) < level


def test_fin_metric_refuses_probes_without_runs():
    loadings = xr.DataArray(np.zeros((2, 5)), dims=("mode", "unit"), coords={"mode": [1, 2]})
    with pytest.raises(ValueError, match="whitespace='split'"):
        fin_metric(loadings, np.full(5, np.nan))
    with pytest.raises(ValueError, match="one per unit"):
        fin_metric(loadings, np.ones(4))


def test_control_keeps_the_whitespace_share_of_the_chi_weights():
    rng = np.random.default_rng(3)
    ws = rng.random(1000) < 0.4
    rho = rng.gamma(2.0, 0.5, 1000)
    rho = rho / rho.mean()
    control = control_like(rho, ws)
    assert control.mean() == pytest.approx(1.0)
    assert control[ws].sum() / control.sum() == pytest.approx(rho[ws].sum() / rho.sum())
    assert np.unique(control[ws]).size == 1 and np.unique(control[~ws]).size == 1


def test_suppress_weights_take_weight_from_the_deep_end_of_the_fin():
    """χ built with a fin: every component's row is a_c·(run position) on space units plus
    noise, so the fin mode's unit loadings order spaces by depth. The χ-suppress weights
    (dh = −s·v_k/nβ, extrapolated by run-position class) must fall with run position, and
    the probe dh must equal −s·v_k/nβ exactly (the pseudo-inverse of a singular vector)."""
    rng = np.random.default_rng(4)
    row = [3, 2] + [1] * 8 + [4, 2, 1, 1, 1, 1, 3, 4]  # def \n 8 spaces x \n 4 spaces def x
    probe = torch.tensor([row] * 6)
    train = torch.tensor([row] * 10)
    positions = run_positions(probe, STRINGS).ravel()
    depth = np.nan_to_num(positions, nan=0.0)
    loadings = np.array([1.0, 0.8, -0.5, 0.3])
    chi = loadings[:, None] * depth[None] + 0.01 * rng.normal(size=(4, depth.size))
    chi = xr.DataArray(chi, dims=("component", "unit"), coords={"component": ["a", "b", "c", "d"]})
    modes = decompose(chi, "component")
    fin = fin_metric(modes["unit_loading"], positions)
    assert fin["mode"] == 1 and fin["metric"] > 0.9
    result = fin_weights(chi, 30.0, fin, probe, train, STRINGS, alpha=1.0)
    rho = result.weights["chi_suppress"]
    assert rho.shape == (10, 17) and rho.mean() == pytest.approx(1.0, rel=1e-6)
    deep = [result.summary["class_weight"][f"space@{k}"] for k in (1, 2, 4, 8)]
    assert deep == sorted(deep, reverse=True) and deep[0] > deep[-1]
    # the probe dh of the solver is −s·v_k/nβ
    from patterning_core.estimators.decomposition import standardize
    from patterning_core.estimators.intervention import solve_intervention

    s = np.sign(fin["rho"])
    u = modes["component_loading"].sel(mode=1).values
    sigma = float(modes["singular_value"].sel(mode=1))
    dh = solve_intervention(standardize(chi, "component"), -s * sigma * u, 30.0, rcond=1e-6)
    v = modes["unit_loading"].sel(mode=1).values
    np.testing.assert_allclose(dh.values, -s * v / 30.0, atol=1e-9)


def test_suppress_weights_read_on_some_probes_and_applied_to_some_rows():
    """χ of half the probe units (``probe_units``) and weights for half the training rows
    (``train_rows``): the other rows keep one common weight, the re-weighted rows still take
    weight from the deep end of the run (the weights relative to the untouched rows are
    1 + α·dh/max|dh| exactly), and the control scales only the whitespace of those rows, to
    the χ weights' whitespace share. The published record's class means rebuild both
    weights bit for bit (``class_weights``, what ``fin_outline_suppress.py rebuild`` runs)."""
    rng = np.random.default_rng(5)
    row = [3, 2] + [1] * 8 + [4, 2, 1, 1, 1, 1, 3, 4]
    probe, train = torch.tensor([row] * 6), torch.tensor([row] * 10)
    units = np.zeros((6, 17), dtype=bool)
    units[3:] = True
    positions = run_positions(probe, STRINGS).ravel()[units.ravel()]
    depth = np.nan_to_num(positions, nan=0.0)
    loadings = np.array([1.0, 0.8, -0.5, 0.3])
    chi = loadings[:, None] * depth[None] + 0.01 * rng.normal(size=(4, depth.size))
    chi = xr.DataArray(chi, dims=("component", "unit"), coords={"component": ["a", "b", "c", "d"]})
    fin = fin_metric(decompose(chi, "component")["unit_loading"], positions)
    rows = np.arange(10) >= 5
    weigh = partial(fin_weights, chi, 30.0, fin, probe, train, STRINGS, probe_units=units.ravel())
    result = weigh(train_rows=rows)
    rho, control = result.weights["chi_suppress"], result.weights["control_dose"]
    off = rho[~rows]
    assert np.ptp(off) == 0 and rho.mean() == pytest.approx(1.0, rel=1e-6)
    deep = [result.summary["class_weight"][f"space@{k}"] for k in (1, 2, 4, 8)]
    assert deep == sorted(deep, reverse=True) and deep[0] > deep[-1]
    dh = {c: v for c, v in result.summary["class_dh"].items()}
    scale = max(abs(v) for v in dh.values())
    labels = fin_classes(train, STRINGS)
    expected = np.vectorize(lambda c: 1.0 + dh.get(c, 0.0) / scale)(labels[rows])
    np.testing.assert_allclose(rho[rows] / off[0, 0], expected, rtol=1e-5)
    ws = classify(train, STRINGS).for_units().whitespace.numpy() & rows[:, None]
    assert np.ptp(control[~ws]) == 0 and not np.allclose(control[ws], control[~ws][0])
    assert control[ws].sum() / control.sum() == pytest.approx(rho[ws].sum() / rho.sum())
    labels_given = weigh(train_rows=rows, train_labels=train_fin_labels(train, STRINGS))
    for name, weights in result.weights.items():  # labels computed beforehand: the same ρ
        np.testing.assert_array_equal(labels_given.weights[name], weights)
    record = json.loads(json.dumps(result.summary, default=float))  # as published
    rebuilt = class_weights(record["class_dh"], train_fin_labels(train, STRINGS), 1.0, rows)
    for name, weights in zip(("chi_suppress", "control_dose"), rebuilt, strict=True):
        np.testing.assert_array_equal(weights.astype(np.float32), result.weights[name])
    with pytest.raises(ValueError, match="train_rows"):
        class_weights(record["class_dh"], train_fin_labels(train, STRINGS), 1.0, rows[:3])
    with pytest.raises(ValueError, match="train_labels"):
        weigh(train_labels=(labels[:, :3], ws[:, :3]))
    with pytest.raises(ValueError, match="probe_units"):
        fin_weights(chi, 30.0, fin, probe, train, STRINGS, probe_units=np.ones(102, bool))
    with pytest.raises(ValueError, match="train_rows"):
        weigh(train_rows=~np.ones(10, bool))


def test_weights_summary_reads_the_doses_off_the_reweighted_rows_only():
    """Worked by hand: row 0 untouched (weight 1, not re-weighted), row 1 weighted
    0.2, 0.4, …, 1.8 with its first five units whitespace (class space@1, the rest word):
    decile ratio 1.8/0.2 = 9, whitespace share 3.0/20 = 0.15 of the total (0.25 uniform),
    mean |ρ − 1| = 4.0/20 = 0.2, class weights 0.6 and 1.4; row 0's whitespace is not
    counted because row 0 is not re-weighted."""
    rho = np.ones((2, 10))
    rho[1] = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.2, 1.4, 1.6, 1.8]
    classes = np.array([["other"] * 10, ["space@1"] * 5 + ["word"] * 5], dtype=object)
    ws = np.zeros((2, 10), dtype=bool)
    ws[:, :5] = True
    rows = np.array([False, True])
    control = control_like(rho, ws & rows[:, None])
    summary = weights_summary(rho, control, (classes, ws), rows)
    assert summary["decile_ratio"] == pytest.approx(9.0)
    assert summary["whitespace_share"] == pytest.approx(
        {"uniform": 0.25, "chi_suppress": 0.15, "control_dose": 0.15}
    )
    assert summary["dose"]["chi_suppress"] == pytest.approx(0.2)
    assert summary["class_weight"] == pytest.approx({"space@1": 0.6, "word": 1.4})
    assert summary["zero_weights"] == 0 and summary["max_weight"] == pytest.approx(1.8)
    everywhere = weights_summary(rho, control, (classes, ws), None)  # row 0 counted too
    assert everywhere["whitespace_share"]["uniform"] == pytest.approx(0.5)
    assert set(everywhere["class_weight"]) == {"other", "space@1", "word"}


def test_loss_controlled_reading_removes_an_ordering_made_by_the_loss_alone():
    """Loadings that depend on the loss only (which itself falls along the run) give a
    raw |ρ| far above the null but a partial ρ given the loss near 0; loadings that depend
    on the position beyond the loss keep a large partial ρ."""
    rng = np.random.default_rng(5)
    positions = rng.integers(1, 9, 2000).astype(float)
    loss = -positions + rng.normal(0, 1.0, 2000)
    via_loss = loss**3 + rng.normal(0, 0.01, 2000)  # monotone in the loss alone
    direct = positions + rng.normal(0, 0.5, 2000)
    loadings = xr.DataArray(
        np.stack([via_loss, direct]), dims=("mode", "unit"), coords={"mode": [1, 2]}
    )
    fin = fin_metric(loadings, positions, control=loss)
    assert abs(fin["per_mode"][1]) > 0.8  # the raw reading is fooled
    assert abs(fin["partial_per_mode"][1]) < 3 / np.sqrt(2000)  # within 3 SE of 0
    assert fin["partial_mode"] == 2 and fin["partial_metric"] > 0.5
    assert fin["control_rho"] < -0.8


def _run(seed, condition, metric, partial, null=0.08, beyond_init=None):
    fin = {"metric": metric, "mode": 1, "null": null, "partial_metric": partial}
    if beyond_init is not None:
        fin["decoding"] = {"from_chi": 0.5, "from_loss": 0.1, "beyond_loss": 0.4}
        fin["decoding"]["beyond_init"] = beyond_init
    return {
        "seed": seed,
        "condition": condition,
        "fin_metric": metric,
        "fin": fin,
        "loss_whitespace": 1.0,
        "loss_other": 2.0,
        "step": 40,
    }


def test_targets_per_seed_against_that_seeds_baseline():
    from patterning_core.experiments.spacing.fin_report import summarize_fin

    growth = [{"step": 40, "metric": 0.7, "probe_units": 100, "space_units": 50, "null": 0.1}]
    runs = []
    for seed, (b, s, c, e) in enumerate([(0.6, 0.2, 0.5, 0.1), (0.4, 0.1, 0.35, 0.2)]):
        runs += [
            _run(seed, "baseline", b, b),
            _run(seed, "chi_suppress", s, b),  # loss-controlled: not cut at all
            _run(seed, "control_dose", c, c),
            _run(seed, "collapse_whitespace", e, e),
        ]
    numbers = summarize_fin({"weights_step": 40}, growth, {}, runs, 1.0)
    cuts = {(r["seed"], r["condition"]): r["cut"] for r in numbers["runs"]}
    assert cuts[(0, "chi_suppress")] == pytest.approx(1 - 0.2 / 0.6)
    assert cuts[(1, "control_dose")] == pytest.approx(1 - 0.35 / 0.4)
    t = numbers["targets"]
    assert t["reference_fin_at_least_0.6"] and t["suppress_halves_every_seed"]
    assert t["control_cuts_less_than_a_quarter"]
    assert not t["collapse_removes_the_fin"]  # 0.2 > 2 × 0.08 on seed 1
    controlled = numbers["targets_loss_controlled"]
    assert not controlled["suppress_halves_every_seed"]
    assert numbers["targets_init_controlled"] == {}  # no initialization χ: no such targets


def test_changes_over_seeds_are_against_each_seeds_own_baseline():
    """Seed 0: baseline 0.6, χ-suppress 0.2 (Δ −0.4); seed 1: baseline 0.4, χ-suppress 0.3
    (Δ −0.1); seed 2 has no baseline and is left out. Mean −0.25, sample sd
    |−0.4 − (−0.1)| / √2."""
    from patterning_core.experiments.spacing.fin_report import changes_over_seeds, summarize_fin

    runs = [
        _run(0, "baseline", 0.6, 0.5),
        _run(0, "chi_suppress", 0.2, 0.5),
        _run(1, "baseline", 0.4, 0.3),
        _run(1, "chi_suppress", 0.3, 0.4),
        _run(1, "control_dose", 0.5, 0.3),
        _run(2, "chi_suppress", 0.0, 0.0),
    ]
    growth = [{"step": 40, "metric": 0.7, "probe_units": 100, "space_units": 50, "null": 0.1}]
    rows = summarize_fin({"weights_step": 40}, growth, {}, runs, 1.0)["runs"]
    changes = {c["condition"]: c for c in changes_over_seeds(rows)}
    assert set(changes) == {"chi_suppress", "control_dose"}
    suppress = changes["chi_suppress"]
    assert suppress["n"] == 2
    assert suppress["fin_metric"]["mean"] == pytest.approx(-0.25)
    assert suppress["fin_metric"]["sd"] == pytest.approx(0.3 / np.sqrt(2))
    assert suppress["fin_metric_loss_controlled"]["mean"] == pytest.approx(0.05)
    assert suppress["fin_beyond_init"] is None  # read without an initialization's χ
    control = changes["control_dose"]
    assert control["fin_metric"] == {"mean": pytest.approx(0.1), "sd": None}  # one seed


def test_init_controlled_targets_read_the_fin_beyond_the_initialization():
    """Targets on the run position beyond the initialization, per seed against its
    baseline; "learned" means above REMOVED_NULLS (2) null levels (here 2 × 0.08)."""
    from patterning_core.experiments.spacing.fin_report import summarize_fin

    growth = [{"step": 40, "metric": 0.5, "probe_units": 100, "space_units": 50, "null": 0.08}]

    def seed_runs(seed: int, baseline: float, suppress: float, control: float, edit: float):
        values = zip(
            ("baseline", "chi_suppress", "control_dose", "collapse_whitespace"),
            (baseline, suppress, control, edit),
            strict=True,
        )
        return [_run(seed, c, 0.5, 0.5, beyond_init=v) for c, v in values]

    runs = seed_runs(0, 0.5, 0.2, 0.45, 0.1) + seed_runs(1, 0.4, 0.15, 0.35, 0.12)
    numbers = summarize_fin({"weights_step": 40}, growth, {}, runs, 1.0)
    t = numbers["targets_init_controlled"]
    assert t == {
        "baseline_fin_learned_every_seed": True,
        "suppress_halves_every_seed": True,  # cuts 0.6 and 0.625
        "control_cuts_less_than_a_quarter": True,  # cuts 0.1 and 0.125
        "collapse_removes_the_fin": True,  # 0.1, 0.12 ≤ 0.16
    }
    runs = seed_runs(0, 0.5, 0.3, 0.3, 0.2) + seed_runs(1, 0.1, 0.0, 0.1, 0.0)
    t = summarize_fin({"weights_step": 40}, growth, {}, runs, 1.0)["targets_init_controlled"]
    assert t == {
        "baseline_fin_learned_every_seed": False,  # seed 1: 0.1 ≤ 0.16
        "suppress_halves_every_seed": False,  # seed 0 cut 0.4; seed 1: no fin to cut
        "control_cuts_less_than_a_quarter": False,  # seed 0 cut 0.4
        "collapse_removes_the_fin": False,  # seed 0: 0.2 > 0.16
    }
    # a control that "spares" a fin the baseline never learned is not a met target
    runs = seed_runs(0, 0.5, 0.2, 0.45, 0.1) + seed_runs(1, 0.1, 0.0, 0.1, 0.0)
    t = summarize_fin({"weights_step": 40}, growth, {}, runs, 1.0)["targets_init_controlled"]
    assert not t["control_cuts_less_than_a_quarter"] and not t["suppress_halves_every_seed"]


def _space_units(m: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 11, m).astype(float), rng


def test_position_decoding_reads_a_fin_held_in_the_chi_directions():
    """Run position sets each unit's direction (an angle in the first two components), the
    loss sets only its length and is unrelated to position: the directions decode the
    position almost exactly and the loss adds nothing."""
    positions, rng = _space_units(2000, 3)
    loss = rng.gamma(2.0, 1.0, positions.size)
    angle = 0.15 * positions
    columns = np.zeros((18, positions.size))
    columns[0], columns[1] = np.cos(angle), np.sin(angle)
    columns[2:] = 0.05 * rng.normal(size=(16, positions.size))
    decoded = position_decoding(columns * loss, positions, loss)
    assert decoded["from_chi"] > 0.95
    # loss unrelated to position: Spearman ρ of m unrelated values has SD 1/√m ≈ 0.022
    assert abs(decoded["from_loss"]) < 4 / np.sqrt(positions.size)
    assert decoded["beyond_loss"] > 0.9
    assert decoded["space_units"] == positions.size


def test_position_decoding_finds_nothing_beyond_a_loss_that_orders_the_spaces():
    """χ of each unit is a random direction whose length is its loss, and the loss falls
    with run position: the loss decodes the position, the directions hold nothing more."""
    positions, rng = _space_units(2000, 4)
    loss = np.exp(-0.3 * positions + 0.3 * rng.normal(size=positions.size))
    directions = rng.normal(size=(18, positions.size))
    directions /= np.linalg.norm(directions, axis=0)
    decoded = position_decoding(directions * loss, positions, loss)
    bound = 4 / np.sqrt(positions.size)  # four SDs of an unrelated Spearman ρ
    assert abs(decoded["from_chi"]) < bound
    assert decoded["from_loss"] > 0.8
    assert abs(decoded["beyond_loss"]) < bound
    nan_outside = np.r_[positions, np.full(50, np.nan)]
    padded = position_decoding(
        np.c_[directions * loss, np.ones((18, 50))], nan_outside, np.r_[loss, np.ones(50)]
    )
    assert padded == decoded  # units outside runs take no part


def _angle_fin(positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[18, m]`` χ columns whose direction turns with run position (an angle in the first
    two components) plus small noise in the others."""
    angle = 0.15 * positions
    columns = 0.05 * rng.normal(size=(18, positions.size))
    columns[0], columns[1] = np.cos(angle), np.sin(angle)
    return columns


def test_position_decoding_finds_nothing_beyond_an_initialization_that_holds_the_fin():
    """The initialization's χ already turns with run position, the trained model's χ is
    the same directions with fresh noise: it holds no run position of its own, so
    ``beyond_init`` is zero to within four SDs of an unrelated Spearman ρ (1/√m each)."""
    positions, rng = _space_units(2000, 5)
    loss = rng.gamma(2.0, 1.0, positions.size)
    init = _angle_fin(positions, rng)
    trained = init + 0.05 * rng.normal(size=init.shape)
    decoded = position_decoding(trained * loss, positions, loss, baseline=init)
    assert decoded["from_chi"] > 0.95 and decoded["from_init"] > 0.95
    assert abs(decoded["beyond_init"]) < 4 / np.sqrt(positions.size)
    assert decoded["beyond_init"] == decoded["from_all"] - decoded["from_init"]


def test_position_decoding_reads_a_fin_the_initialization_lacks():
    """The initialization's directions are random (no run position), the trained model's
    turn with it: everything the trained χ decodes is beyond the initialization."""
    positions, rng = _space_units(2000, 6)
    loss = rng.gamma(2.0, 1.0, positions.size)
    init = rng.normal(size=(18, positions.size))
    decoded = position_decoding(_angle_fin(positions, rng) * loss, positions, loss, baseline=init)
    assert abs(decoded["from_init"]) < 4 / np.sqrt(positions.size)
    assert decoded["beyond_init"] > 0.9
    with pytest.raises(ValueError, match="same probe units"):
        position_decoding(init, positions, loss, baseline=init[:, :-1])


def test_position_decoding_needs_enough_space_units():
    with pytest.raises(ValueError, match="space units"):
        position_decoding(np.ones((3, 4)), np.array([1.0, 2.0, np.nan, 3.0]), np.ones(4))
