"""Induce / Repress weights for the induction circuit, the retraining task and the flow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.data.token_classes import PRIMARY_CLASSES
from patterning_core.estimators.mode_weights import (
    class_weight_table,
    induce_sign,
    mode_weights,
    weights_for_units,
)
from patterning_core.experiments.induction.patterning import unit_classes

HEADS = ["L0H0", "L0H1", "L1H0", "L1H1"]
SCORES = {"L0H0": 0.0, "L0H1": 0.05, "L1H0": 0.8, "L1H1": 0.6}  # layer 1 becomes induction
NAMES = ["induction", "other", "bracket"]


def known_chi(l1_expresses_induction: bool = True, units: int = 40) -> xr.DataArray:
    """χ = 3·1·gᵀ (a mode uniform over components, alignment 0) + a·bᵀ with b = +1 on
    induction units, −1 on the others, and a = −1 on layer-1 heads, +1 on layer-0 heads
    (layer-1 heads express the induction units: χ < 0) or the opposite."""
    rng = np.random.default_rng(0)
    b = np.where(np.arange(units) < units // 2, 1.0, -1.0)
    g = rng.normal(size=units)
    g -= g.mean() + (g @ b) / (b @ b) * b  # centred, orthogonal to b
    a = np.array([1.0, 1.0, -1.0, -1.0]) * (1 if l1_expresses_induction else -1)
    chi = 3.0 * np.outer(np.ones(4), g) + np.outer(a, b) + 0.05  # offset: no nβ, raw scale
    classes = np.where(b > 0, "induction", "other").astype(object)
    return xr.DataArray(
        chi * np.array([1.0, 2.0, 0.5, 3.0])[:, None],  # component-dependent scale Z_C/Z
        dims=("component", "unit"),
        coords={"component": HEADS, "unit": np.arange(units), "pattern_class": ("unit", classes)},
    )


def train_codes() -> np.ndarray:
    """Training units [N, T − 1]: induction, other and a class no probe has (bracket)."""
    return np.array([[0, 1, 1, 2], [0, 0, 1, 1], [2, 0, 1, 0]])


@pytest.mark.parametrize("expresses", [True, False])
def test_induce_upweights_the_units_the_later_induction_heads_express(expresses):
    result = mode_weights(known_chi(expresses), SCORES, train_codes(), NAMES, n_beta=30.0)
    s = result.summary
    assert s["mode"] == 2 and abs(s["alignment"]) > 0.9  # PC1 is the uniform mode
    assert abs(s["alignments"][1]) < 1e-6
    assert (
        s["conditions"]["induce"]["score_weighted_change"]
        < 0
        < (s["conditions"]["repress"]["score_weighted_change"])
    )
    assert s["fit_r2"] == pytest.approx(1.0)  # dh ∝ b: constant within each class
    codes = train_codes()
    induce, repress = result.weights["induce"], result.weights["repress"]
    up, down = (0, 1) if expresses else (1, 0)  # the class Induce raises / lowers
    assert (induce[codes == up] > 1).all() and (induce[codes == down] < 1).all()
    assert (repress[codes == up] < 1).all() and (repress[codes == down] > 1).all()
    # Class weights reported = the per-unit weights; mean weight 1 over training units.
    for condition, rho in result.weights.items():
        table = s["conditions"][condition]["class_weights"]
        for code, name in enumerate(NAMES):
            np.testing.assert_allclose(rho[codes == code], table[name], rtol=1e-6)
        assert rho.mean() == pytest.approx(1.0, rel=1e-6)


def test_sign_follows_the_definition_not_the_svd_sign():
    from patterning_core.estimators.decomposition import decompose

    modes = decompose(known_chi())
    flipped = modes.copy(deep=True)
    flipped["component_loading"] = -flipped["component_loading"]
    assert induce_sign(modes, 2, SCORES) == -induce_sign(flipped, 2, SCORES)


def test_every_training_unit_gets_a_weight():
    codes = train_codes()
    result = mode_weights(known_chi(), SCORES, codes, NAMES, n_beta=30.0, alpha=0.5)
    s = result.summary
    assert s["classes_without_probes"] == ["bracket"]
    for rho in result.weights.values():
        assert rho.shape == codes.shape and rho.dtype == np.float32
        assert np.isfinite(rho).all() and (rho >= 0).all()
        # A class without probes keeps dh = 0, weight 1 before rescaling; the probe
        # classes have dh = ±max|dh| (equal counts), so 1 ± α relative to it.
        bracket = rho[codes == 2]
        assert np.ptp(bracket) == 0
        ratios = sorted({float(r) for r in rho[codes != 2] / bracket[0]})
        np.testing.assert_allclose(ratios, [0.5, 1.5], rtol=1e-5)


def test_alpha_zero_is_uniform_and_large_alpha_clips():
    codes = train_codes()
    zero = mode_weights(known_chi(), SCORES, codes, NAMES, n_beta=30.0, alpha=0.0)
    for rho in zero.weights.values():
        np.testing.assert_array_equal(rho, np.ones_like(rho))
    big = mode_weights(known_chi(), SCORES, codes, NAMES, n_beta=30.0, alpha=3.0)
    induce = big.summary["conditions"]["induce"]
    assert induce["class_weights"]["other"] == 0.0
    assert induce["fraction_clipped"] == pytest.approx((codes == 1).mean())
    assert induce["fraction_zero"] == pytest.approx((codes == 1).mean())


def test_class_table_matches_unit_weights():
    codes = np.random.default_rng(1).integers(0, 3, size=(50, 7))
    class_dh = {"induction": 2e-5, "other": -1e-5}
    fraction = {n: float((codes == i).mean()) for i, n in enumerate(NAMES)}
    for alpha, negative in [(0.7, "clip"), (2.5, "clip"), (2.5, "shift")]:
        rho = weights_for_units(class_dh, codes, NAMES, alpha, negative)
        table = class_weight_table(class_dh, fraction, alpha, negative).weights
        for i, n in enumerate(NAMES):
            np.testing.assert_allclose(rho[codes == i], table[n], rtol=1e-6)


def test_unit_classes_align_with_loss_units():
    tokens = torch.tensor([[5, 6, 5, 6, 7]])
    codes, names = unit_classes(tokens, [f"<{i}>" for i in range(8)])
    assert codes.shape == (1, 4) and names == list(PRIMARY_CLASSES)
    # Unit t predicts token t + 1; the bigram (5, 6) recurs at the last "6".
    assert [names[c] for c in codes[0]] == ["other", "other", "induction", "other"]


def test_crossing_step_interpolates_between_checkpoints():
    from patterning_core.experiments.induction.patterning import crossing_step

    assert crossing_step([0, 250, 500], [0.0, 0.1, 0.5], 0.3) == pytest.approx(375.0)
    assert crossing_step([0, 250], [0.4, 0.5], 0.3) == 0.0
    assert crossing_step([0, 250], [0.0, 0.1], 0.3) is None


def test_verdict():
    from patterning_core.experiments.induction.report import verdict

    assert verdict(1000, 500, 2000, 3000) == {"induce": True, "repress": True, "note": ""}
    assert verdict(1000, 501, 1999, 3000)["induce"] is False
    assert verdict(1000, 750, None, 3000)["repress"] is True
    assert verdict(2000, 750, None, 3000)["repress"] is None  # run too short to tell
    assert verdict(None, 500, 500, 3000)["induce"] is None


def _run(condition: str, seed: int, best: list[float], formation: int | None) -> dict:
    return {
        "seed": seed,
        "condition": condition,
        "steps": [0, 100, 200, 300],
        "best": best,
        "threshold": 0.3,
        "formation_step": formation,
        "final_val_loss": 2.5,
        "final_val_loss_by_class": {"other": 2.75, "induction": 1.25},
    }


HAND_RUNS = [
    _run("baseline", 0, [0.0, 0.1, 0.5, 0.6], 200),  # crosses 0.3 at 150
    _run("induce", 0, [0.0, 0.5, 0.6, 0.7], 100),  # crosses at 60
    _run("repress", 0, [0.0, 0.0, 0.1, 0.2], None),
]


def test_run_rows_on_hand_built_runs():
    from patterning_core.experiments.induction.report import run_rows

    base, induce, repress = run_rows(HAND_RUNS, steps=300)
    assert base == {
        "seed": 0,
        "condition": "baseline",
        "formation step": "200",
        "÷ baseline": "1.00",
        "crossing (interp.)": "150",
        "÷ baseline (interp.)": "1.00",
        "final best PMS": "0.600",
        "final val loss": "2.5000",
        "val loss (induction)": "1.250",
        "val loss (other)": "2.750",
    }
    assert (induce["formation step"], induce["÷ baseline"]) == ("100", "0.50")
    assert (induce["crossing (interp.)"], induce["÷ baseline (interp.)"]) == ("60", "0.40")
    assert (repress["formation step"], repress["÷ baseline"]) == ("not formed", "> 1.50")
    assert (repress["crossing (interp.)"], repress["÷ baseline (interp.)"]) == ("–", "> 2.00")
    # A run whose seed has no baseline has no ratio.
    (alone,) = run_rows([{**HAND_RUNS[1], "seed": 5}], steps=300)
    assert alone["÷ baseline"] == alone["÷ baseline (interp.)"] == "–"


def test_seed_verdicts_on_checkpoints_and_crossings():
    from patterning_core.experiments.induction.report import seed_verdicts

    (v,) = seed_verdicts(HAND_RUNS, steps=300)
    assert (v["seed"], v["induce"], v["repress"]) == (0, True, None)  # 300 < 2 × 200
    assert v["note"] == "Repress not formed by step 300 (> 1.50× baseline)"
    assert (v["interpolated"]["induce"], v["interpolated"]["repress"]) == (True, True)


# --------------------------------------------------------------------------- the flow (tiny)

DATA = {"source": "synthetic", "preset": "tiny", "n_seqs": 128, "seed": 0}
TRAIN = {
    "steps": 24,
    "batch_size": 8,
    "lr": 3e-3,
    "warmup_steps": 4,
    "seed": 0,
    "checkpoint_steps": [0, 8, 16, 24],
}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """A reference run (the seed-0 baseline's folder) and a χ store at its step 16."""
    from patterning_core.data.lm_data import load_lm_tokens
    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.checkpoints import checkpoint_path
    from patterning_core.model.training import train
    from patterning_core.model.transformer import preset
    from patterning_core.sampling.sgld import SamplerConfig
    from patterning_core.store.chi_store import assemble_chi, create_store, write_shard
    from patterning_core.store.workloads import build_workload
    from tasks.retraining import UNIFORM, weighted_run_dir
    from tasks.training import train_config

    root = tmp_path_factory.mktemp("induction")
    runs = root / "runs"
    reference = weighted_run_dir(str(runs), "tiny", DATA, TRAIN, UNIFORM)
    tokens = load_lm_tokens(DATA, preset("tiny"))
    train(
        preset("tiny"),
        tokens.train,
        train_config(TRAIN),
        run_dir=reference,
        progress=False,
        val_tokens=tokens.val[:256],
    )
    workload = {"kind": "transformer", "data": DATA, "sgld_seqs": 32, "probe_seqs": 2}
    work = build_workload(workload, checkpoint_path(reference, 16))
    config = SamplerConfig(
        step_size=1e-4, n_beta=10.0, localization=100.0, num_chains=2, num_draws=8, batch_size=8
    )
    store = str(root / "chi.zarr")
    create_store(
        store,
        checkpoints=[16],
        components=list(work.components),
        num_chains=2,
        num_draws=config.num_draws,
        unit_coords=work.unit_coords,
        attrs={
            "sampler_config": config.to_json(),
            "n_beta": config.n_beta,
            "workload": json.dumps(workload),
        },
    )
    stats = sample_susceptibility_stats(
        work.loss_fn, work.params, work.data, work.probes, work.components, config, progress=False
    )
    write_shard(store, 16, stats)
    assemble_chi(store, 16)
    return {"root": root, "runs": str(runs), "reference": str(reference), "store": store}


def _checkpoint_times(run_dirs: list[str]) -> dict[str, float]:
    from pathlib import Path

    return {str(p): p.stat().st_mtime_ns for d in run_dirs for p in Path(d).iterdir()}


# The synthetic-token flow is superseded by the natural-text ``induce`` flow, whose tiny
# end-to-end run (tests/experiments/test_induce_flow.py) covers the same layers in the
# default suite; this one runs with the long experiments to keep that suite's time down.
@pytest.mark.slow
def test_flow_end_to_end_and_rerun_trains_nothing(tiny_experiment, prefect_server):
    from pathlib import Path

    from flows.induction_patterning import induction_patterning
    from flows.parameters import InductionPatterningParameters

    exp = tiny_experiment
    params = dict(
        chi_store=exp["store"],
        chi_step=16,
        reference_run_dir=exp["reference"],
        preset="tiny",
        train=TRAIN,
        seeds=[0, 1],
        alpha=1.0,
        out_dir=str(exp["root"] / "report"),
        runs_root=exp["runs"],
        n_workers=1,
    )
    first = induction_patterning(InductionPatterningParameters(**params))
    report = Path(first["report"])
    assert report.is_file()
    for png in ("prefix_matching_conditions.png", "val_loss_conditions.png", "class_weights.png"):
        assert (report.parent / png).stat().st_size > 0
    assert len(first["rows"]) == 6 and {r["condition"] for r in first["rows"]} == {
        "baseline",
        "induce",
        "repress",
    }
    results = json.loads((report.parent / "results.json").read_text())
    by_label = {r["label"]: r for r in results["runs"]}
    # The seed-0 baseline is the reference run (same folder): nothing to train.
    assert by_label["baseline seed 0"]["run_dir"] == exp["reference"]
    assert by_label["baseline seed 0"]["trained_steps"] == 0
    assert first["trained_steps"] == 5 * TRAIN["steps"]
    assert len({r["run_dir"] for r in results["runs"]}) == 6
    text = report.read_text()
    assert "Formation step" in text and "FORMATION_THRESHOLD" in text and "Sign rule" in text
    run_dirs = [r["run_dir"] for r in results["runs"]]
    before = _checkpoint_times(run_dirs)
    again = induction_patterning(InductionPatterningParameters(**params))
    assert again["trained_steps"] == 0
    assert _checkpoint_times(run_dirs) == before
    assert again["rows"] == first["rows"]
