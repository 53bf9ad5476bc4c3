"""The ``induce`` flow end to end on tiny sizes: a small Python corpus (the standard
library's ``json`` package) with a fifth synthetic in-context bigrams, the ``demo`` preset
for 40 steps, χ at two checkpoints (plus a replica seed, twice the draws and a burn-in at
the weights step), the mode, the weights of four conditions, five conditions retrained, the
report; a rerun recomputes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.experiments.test_spacing_flow import SAMPLER, TRAIN, prefect_server

__all__ = ["prefect_server"]


def _load_script(name: str):
    """A module of ``scripts/`` (not a package), imported from its file."""
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
def test_induce_flow_end_to_end(tmp_path, prefect_server):
    from flows.induce import induce
    from flows.parameters import InduceParameters
    from patterning_core.estimators.feature_extrapolation import decile_ratio
    from patterning_core.experiments.induction.natural_report import CONDITIONS

    data = {"source": "corpus", "paths": [str(Path(json.__file__).parent)]}
    params = InduceParameters(
        preset="demo",
        data={**data, "in_context_bigrams": 0.2},
        train=TRAIN,
        seeds=[0],
        chi_checkpoints=[20, 40],  # two checkpoints before "formation", as in the recipe
        weights_step=40,
        ratio=2.0,
        sampler={**SAMPLER, "seed": 0},
        sgld_seqs=32,
        probe_seqs=4,
        out_dir=str(tmp_path / "out"),
        runs_root=str(tmp_path / "runs"),
        n_workers=1,
        retrain_without_mode=True,  # 40 steps form no circuit: retrain all the same
        linear_check_seqs=2,
    )
    first = induce(params)
    results = json.loads(Path(first["results"]).read_text())
    # the form
    for key in ("synthetic_share", "steps", "runs", "mode", "extrapolation", "dose"):
        assert key in results
    assert results["synthetic_share"] == 0.2 and results["steps"] == 40
    assert results["layer1_heads"] == 8 and 0 <= results["layer1_induction_heads"] <= 8
    conditions = list(CONDITIONS)  # the five and the cell permutation
    assert conditions[:5] == ["baseline", "induce", "repress", "control_random", "control_shuffled"]
    assert conditions[5:] == ["control_cell_shuffled"]
    assert [r["condition"] for r in results["runs"]] == conditions
    for r in results["runs"]:
        assert np.isfinite(r["heldout_loss"]) and 0 <= r["final_best_pms"] <= 1
    mode = results["mode"]
    assert mode["checkpoint"] == 40 and 0 <= mode["head_alignment"] <= 1
    assert 0 <= mode["seed_agreement"] <= 1 + 1e-9
    assert mode["chains"] == SAMPLER["num_chains"]
    assert 0 <= mode["chain_sign_agreement"] <= mode["chains"]
    assert results["dose"]["induce_ratio"] == pytest.approx(2.0, rel=1e-2)
    for shuffle in ("control_shuffled", "control_cell_shuffled"):  # permutations: same dose
        assert results["dose"][f"{shuffle}_ratio"] == pytest.approx(results["dose"]["induce_ratio"])
    convergence = results["convergence"]
    assert set(convergence["variants"]) == {"twice_the_draws", "burn_in"}
    assert set(convergence["variants"]["burn_in"]) == {"raw", "beyond_pc1"}
    assert len(convergence["structure"]["per_component"]) == 18
    draws = SAMPLER["num_chains"] * SAMPLER["num_draws"]
    assert 0 < convergence["autocorrelation_time"]["effective_draws"] <= draws
    # χ again on the retrained runs of seed 0 (the baseline is the reference: its store),
    # one store per training run, named by its run folder
    loop = results["loop"]["0"]
    assert set(loop) == set(conditions[1:])
    assert -1 <= loop["induce"]["cosine"] <= 1 and loop["induce"]["heads"] == 16
    for shuffle in ("control_shuffled", "control_cell_shuffled"):  # no probe weights
        assert "predicted" not in loop[shuffle]
    # every condition along Induce's predicted direction; Induce's prediction is its norm
    induce_pred = np.asarray(loop["induce"]["predicted"])
    assert loop["induce"]["predicted_along_induce"] == pytest.approx(np.linalg.norm(induce_pred))
    for row in loop.values():
        unit = induce_pred / np.linalg.norm(induce_pred)
        assert row["along_induce"] == pytest.approx(unit @ np.asarray(row["measured"]))
        assert row["along_induce_se"] > 0
    weighted = {Path(r["run_dir"]).name for r in results["runs"] if r["condition"] != "baseline"}
    stores = list((tmp_path / "out" / "loop").glob("*.zarr"))
    # <run folder>-<sampler digest>-<step>.zarr
    assert {s.name.rsplit("-", 2)[0] for s in stores} == weighted and len(stores) == 5
    # the two-run χ's linear check: two layer-1 heads and one layer-0 head, two doses each
    check = results["linear_check"]
    assert len(check["heads"]) == 3 and [h[:2] for h in check["heads"]] == ["L1", "L1", "L0"]
    assert [(r["component"], r["fraction"]) for r in check["rows"]] == [
        (h, f) for h in check["heads"] for f in (0.1, 0.25)
    ]
    for r in check["rows"]:
        values = [r[k] for k in ("measured", "predicted", "predicted_restricted")]
        assert np.all(np.isfinite(values)) and r["predicted"] != 0
        assert r["ratio"] == pytest.approx(r["measured"] / r["predicted"])
    # the reference's head scores at every checkpoint: [checkpoints, layers, heads]
    assert np.asarray(results["reference"]["prev_per_head"]).shape == (3, 2, 8)
    # published: χ with its probe coordinates and the extrapolator's probe weights
    published = xr.open_dataset(tmp_path / "out" / "published" / "chi_and_probe_weights.nc")
    assert published["chi"].sizes["unit"] == 4 * 63
    assert {"dh", "dh_fit", "rho_induce", "predictable"} <= set(published.data_vars)
    files = json.loads((tmp_path / "out" / "weights.json").read_text())["files"]
    weights = np.load(files["induce"]["path"])
    assert decile_ratio(weights) == pytest.approx(2.0, rel=1e-2)
    report = Path(first["report"]).read_text()
    assert "## Targets per seed" in report and "Written by the `induce` flow, run as `" in report
    assert "## Linear response of the two-run χ" in report and "measured / two-run" in report
    assert "along Induce's prediction: measured" in report
    assert (tmp_path / "out" / "formation.png").is_file()
    for figure in ("reference_prefix_matching.png", "reference_previous_token.png"):
        assert (tmp_path / "out" / figure).is_file() and f"]({figure})" in report
    # the token ceiling bounds every mode's token correlation on the same units
    ceiling = mode["token_ceiling"]
    assert len(ceiling["folds"]) == 2 and np.isfinite(ceiling["heldout_r"])
    best = max(abs(row["token_correlation"]) for row in mode["table"])
    assert ceiling["in_sample_r"] >= best - 1e-9 and "Token ceiling" in report

    # the per-checkpoint scan script reads the flow's store and the reference run
    scan = _load_script("induce_mode_scan")
    reference = next(r["run_dir"] for r in results["runs"] if r["condition"] == "baseline")
    chi_store = f"tiny={tmp_path / 'out' / 'chi.zarr'}"
    out = str(tmp_path / "scan")
    scan.main(
        ["--store", chi_store, "--run-dir", reference, "--out", out, "--reach-truncation", "cv"]
    )
    scanned = json.loads((tmp_path / "scan.json").read_text())["stores"]["tiny"]["checkpoints"]
    assert [c["step"] for c in scanned] == [20, 40]
    assert {c["reach_truncation"] for c in scanned} == {"cross-validated"}
    assert "token ceiling (held out)" in (tmp_path / "scan.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    again = induce(params)
    assert again["targets"] == first["targets"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamps

    # Without retrain_without_mode the flow retrains only when the mode search found the
    # mode; either way the report and results.json are written (everything else memoized).
    # This run also takes the span extrapolator, a given target mode and the restricted χ,
    # which the report and results.json name.
    gated = induce(
        params.model_copy(
            update={
                "retrain_without_mode": False,
                "extrapolator": "span",
                "target_mode": 2,
                "chi_estimator": "restricted",
            }
        )
    )
    gated_results = json.loads(Path(gated["results"]).read_text())
    assert (gated_results["runs"] == []) == (not gated_results["mode"]["found"])
    # the restricted χ is another matrix: same leading modes searched, other loadings
    gated_table = gated_results["mode"]["table"]
    assert [r["mode"] for r in gated_table] == [r["mode"] for r in mode["table"]]
    assert gated_table != mode["table"]
    extrapolation = gated_results["extrapolation"]
    assert extrapolation["extrapolator"] == "span" and extrapolation["heldout_r2"] is None
    assert -1 <= extrapolation["heldout_target_cosine"] <= 1
    assert f"{extrapolation['span_rcond']:g}" in extrapolation["span_rcond_scores"]
    assert gated_results["mode"]["index"] == 2 and gated_results["mode"]["target"] == "given"
    report = Path(gated["report"]).read_text()
    assert "solved in the span of the unit features" in report
    assert "was given by the parameters (`target_mode`)" in report
    assert "χ read with the restricted estimator" in report
    with xr.open_dataset(tmp_path / "out" / "published" / "chi_and_probe_weights.nc") as table:
        assert table.attrs["chi_estimator"].startswith("restricted")

    # χ read from a published file (digest-checked, nothing sampled for it), the circuit as
    # the target and one weight per cell of sequence kind × predictable.
    import shutil

    from patterning_core.experiments.induction.token_groups import GROUPS, token_groups
    from patterning_core.model.checkpoints import file_sha256

    source = tmp_path / "published_chi.nc"
    shutil.copy(tmp_path / "out" / "published" / "chi_and_probe_weights.nc", source)
    heads = [f"L{layer}H{h}" for layer in (0, 1) for h in range(8)]
    stated = {head: (1.0 if head in ("L0H3", "L1H5") else 0.0) for head in heads}
    cells_params = InduceParameters(
        **{
            **params.model_dump(),
            "published_chi": str(source),
            "published_chi_sha256": file_sha256(source),
            "chi_estimator": "restricted",
            "target": "circuit",
            "circuit_scores": stated,
            "extrapolator": "cells",
            "linear_check": False,
            "out_dir": str(tmp_path / "cells_out"),
        }
    )
    cells = induce(cells_params)
    cells_results = json.loads(Path(cells["results"]).read_text())
    assert not (tmp_path / "cells_out" / "chi.zarr").exists()  # χ was not sampled
    assert cells_results["mode"]["target"] == "circuit"
    assert cells_results["mode"]["seed_agreement"] is None
    assert "not_measured" in cells_results["convergence"]
    assert cells_results["extrapolation"]["extrapolator"] == "cells"
    cells_report = Path(cells["report"]).read_text()
    assert "span of four cells" in cells_report
    assert "The target is the circuit itself" in cells_report
    # the within-cell permutation would be Induce itself: not made, not trained
    assert [r["condition"] for r in cells_results["runs"]] == conditions[:5]
    assert set(cells_results["loop"]["0"]) == set(conditions[1:5])
    cell_files = json.loads((tmp_path / "cells_out" / "weights.json").read_text())["files"]
    assert "control_cell_shuffled" not in cell_files
    induce_w = np.load(cell_files["induce"]["path"])
    assert decile_ratio(induce_w) == pytest.approx(2.0, rel=1e-2)
    from patterning_core.data.lm_data import load_lm_tokens
    from tasks.training import model_preset

    tokens = load_lm_tokens(params.data, model_preset("demo"))
    groups = token_groups(tokens.train, tokens.n_synthetic)
    for g in GROUPS:  # one weight per cell
        if groups[g].any():
            assert np.ptp(induce_w[groups[g]]) == 0
    # a changed file is refused before any weight is written
    with source.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        induce(cells_params.model_copy(update={"out_dir": str(tmp_path / "cells_changed")}))


def test_the_loop_measures_the_baseline_again_when_it_samples_otherwise(tmp_path, monkeypatch):
    """With ``loop_sampler`` the loop's stores (the baseline's too) are sampled with it, one
    store per training run and sampler; without it the reference's baseline is read from
    the main store, which was sampled the same way."""
    import flows.induce as induce_flow
    from flows.parameters import InduceParameters

    sampled = []
    monkeypatch.setattr(
        induce_flow,
        "_chi_store",
        lambda p, store, checkpoints, sampler: (
            sampled.append((store, checkpoints, sampler)) or str(store)
        ),
    )
    runs = {}
    for name in ("reference", "induce_wide-wabc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "step_00000040.safetensors").write_bytes(b"")
        runs[name] = {"run_dir": str(tmp_path / name)}
    base = dict(train=TRAIN, chi_checkpoints=[20, 40], weights_step=40, sampler={**SAMPLER})
    plain = InduceParameters(**base)
    cheap = InduceParameters(**base, loop_sampler={"num_draws": 2})
    reference, weighted = runs["reference"], runs["induce_wide-wabc"]
    out = tmp_path / "out"

    assert induce_flow._loop_store(plain, reference, out, reference, "main.zarr") == "main.zarr"
    assert induce_flow._loop_store(cheap, reference, out, reference, "main.zarr") != "main.zarr"
    induce_flow._loop_store(plain, weighted, out, reference, "main.zarr")
    induce_flow._loop_store(cheap, weighted, out, reference, "main.zarr")
    (cheap_ref, _, sampler), (plain_run, at, _), (cheap_run, _, cheap_sampler) = sampled
    assert sampler == cheap_sampler == {**SAMPLER, "num_draws": 2}
    assert at == [
        {"step": 40, "path": str(tmp_path / "induce_wide-wabc/step_00000040.safetensors")}
    ]
    assert cheap_ref.name.startswith("reference-") and cheap_ref.parent == out / "loop"
    assert plain_run.name.startswith("induce_wide-wabc-") and plain_run != cheap_run
    assert plain_run.name.endswith("-40.zarr")  # the loop step: another step, another store


def test_reweighting_from_a_checkpoint_reaches_the_weighted_runs_and_the_loop(
    tmp_path, monkeypatch
):
    """``weights_from_step``: only the weighted conditions' training settings carry it (the
    baseline stays the reference run); the loop then reads every run at ``loop_step``, the
    reference from its main store when that step is one of the χ checkpoints."""
    import flows.induce as induce_flow
    from flows.parameters import InduceParameters
    from flows.retraining import training_jobs

    files = {"induce": {"path": "w.npy", "digest": "abc"}}
    jobs = training_jobs("demo", {}, TRAIN, [0], files, "runs", 1, weights_from_step=20)
    by_condition = {job["label"].split()[0]: job["train_settings"] for job in jobs}
    assert by_condition["induce"]["weights_from_step"] == 20
    assert "weights_from_step" not in by_condition["baseline"]

    # the uniform run up to step 20 is trained once, before the weighted runs start from it
    import flows.retraining as retraining_flow

    trained, retrained = [], []
    monkeypatch.setattr(retraining_flow, "train_model", lambda *a: trained.append(a))
    monkeypatch.setattr(retraining_flow, "retrain_weighted", lambda **job: retrained.append(job))
    files2 = {**files, "repress": {"path": "r.npy", "digest": "def"}}
    jobs2 = training_jobs("demo", {}, TRAIN, [0, 1], files2, "runs", 1, weights_from_step=20)
    retraining_flow.retrain(jobs2, None, 1)
    assert len(retrained) == len(jobs2)
    prefix = {**TRAIN, "steps": 20}
    assert trained == [
        ("demo", {}, {**prefix, "seed": 0}, "runs", 1),
        ("demo", {}, {**prefix, "seed": 1}, "runs", 1),
    ]

    sampled = []
    monkeypatch.setattr(
        induce_flow,
        "_chi_store",
        lambda p, store, checkpoints, sampler: sampled.append(checkpoints) or str(store),
    )
    run = tmp_path / "induce_wide-wabc"
    run.mkdir()
    for step in (20, 40):
        (run / f"step_{step:08d}.safetensors").write_bytes(b"")
    base = dict(train=TRAIN, chi_checkpoints=[20, 40], weights_step=20, sampler={**SAMPLER})
    p = InduceParameters(**base, weights_from_step=20, loop_step=40)
    reference = {"run_dir": str(tmp_path / "reference")}
    out = tmp_path / "out"
    assert induce_flow._loop_store(p, reference, out, reference, "main.zarr") == "main.zarr"
    induce_flow._loop_store(p, {"run_dir": str(run)}, out, reference, "main.zarr")
    assert sampled == [[{"step": 40, "path": str(run / "step_00000040.safetensors")}]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"weights_from_step": 40}, "must lie before the last step"),
        ({"loop_step": 30}, "must be a checkpoint step"),
        ({"weights_from_step": 20}, "must come after weights_from_step"),
    ],
)
def test_bad_reweighting_steps_are_refused(fields: dict, message: str):
    from pydantic import ValidationError

    from flows.parameters import InduceParameters

    base = dict(train=TRAIN, chi_checkpoints=[20, 40], weights_step=20, sampler={**SAMPLER})
    with pytest.raises(ValidationError, match=message):
        InduceParameters(**base, **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"published_chi": "chi.nc"}, "published_chi_sha256"),
        ({"published_chi": "chi.nc", "published_chi_sha256": "0" * 64}, "linear_check"),
        ({"target": "circuit", "target_mode": 2}, "drop target_mode"),
        ({"extrapolator": "cells", "balance_positions": True}, "one per cell"),
        ({"target": "shape"}, "target"),
    ],
)
def test_bad_designs_are_refused_before_anything_runs(fields: dict, message: str):
    from pydantic import ValidationError

    from flows.parameters import InduceParameters

    base = dict(train=TRAIN, chi_checkpoints=[20, 40], weights_step=20, sampler={**SAMPLER})
    with pytest.raises(ValidationError, match=message):
        InduceParameters(**base, **fields)


def test_a_bad_loop_sampler_is_refused_before_anything_runs():
    from pydantic import ValidationError

    from flows.parameters import InduceParameters

    with pytest.raises(ValidationError, match="num_draws"):
        InduceParameters(loop_sampler={"num_draws": 0})


@pytest.mark.parametrize(
    ("config", "formation_step"),
    [
        ("induce.json", 17250),
        ("induce_wide.json", 5000),
        ("induce_wide_repeat.json", 5000),
        ("induce_wide_late.json", 5000),
    ],
)
def test_the_published_configs_run_the_recipe_substrates(config: str, formation_step: int):
    """``docs/examples/induce.json`` (``demo`` preset) and ``induce_wide.json`` (d_head 16;
    ``induce_wide_repeat.json``: half the probe sequences repeat their first half;
    ``induce_wide_late.json``: χ at 4,500 and 4,750, nearer formation) keep the
    recipes' substrates: at most a fifth synthetic sequences, the recipe's
    training, χ checkpoints before the reference's formation (steps 17,250 and 5,000;
    docs/results/induction_patterning/)."""
    from flows.parameters import InduceParameters
    from patterning_core.recipes import induce_train, induce_wide_train

    path = Path(__file__).parents[2] / "docs/examples" / config
    params = InduceParameters(**json.loads(path.read_text()))
    assert params.data.get("in_context_bigrams", 0.0) <= 0.2
    recipe = induce_wide_train() if params.preset == "induce_wide" else induce_train()
    assert params.train == recipe
    assert max(params.chi_checkpoints) < formation_step and params.seeds == [0, 1, 2]


def test_the_formation_config_reads_chi_at_and_after_formation():
    """``docs/examples/induce_wide_formation.json``: the ``induce_wide`` substrate with χ at
    steps 5,000 and 5,250, the reference's formation step and the next checkpoint (a design
    change from the before-formation configs above, named as such in the README)."""
    from flows.parameters import InduceParameters
    from patterning_core.recipes import induce_wide_train

    path = Path(__file__).parents[2] / "docs/examples/induce_wide_formation.json"
    params = InduceParameters(**json.loads(path.read_text()))
    assert params.preset == "induce_wide" and params.train == induce_wide_train()
    assert params.data.get("in_context_bigrams", 0.0) <= 0.2
    assert min(params.chi_checkpoints) >= 5000 and params.weights_step == 5000
    assert set(params.chi_checkpoints) <= set(params.train["checkpoint_steps"])


def test_the_many_probes_config_is_the_formation_run_with_ten_times_the_probes(tmp_path):
    """``docs/examples/induce_wide_probes320_chi.json``: a ``susceptibilities`` configuration
    for the formation reference at step 5,000 with the formation run's data and sampler and
    320 probe sequences instead of 32 (the README's probe-count design change), checked
    against a stand-in checkpoint file of the preset."""
    from flows.parameters import InduceParameters, SusceptibilityParameters
    from patterning_core.model.checkpoints import save_checkpoint
    from patterning_core.model.transformer import init_params, preset

    root = Path(__file__).parents[2] / "docs/examples"
    formation = InduceParameters(**json.loads((root / "induce_wide_formation.json").read_text()))
    spec = json.loads((root / "induce_wide_probes320_chi.json").read_text())
    (ckpt,) = spec["checkpoints"]
    assert ckpt["step"] == formation.weights_step
    assert Path(ckpt["path"]).name == f"step_{ckpt['step']:08d}.safetensors"
    config = preset(formation.preset)
    ckpt["path"] = str(
        save_checkpoint(tmp_path / "stand_in.safetensors", init_params(config), config, 5000, 0)
    )
    chi = SusceptibilityParameters(**spec)
    assert chi.sampler == formation.sampler and chi.workload["data"] == formation.data
    assert chi.workload["sgld_seqs"] == formation.sgld_seqs
    assert chi.workload["probe_seqs"] == 10 * formation.probe_seqs


@pytest.mark.parametrize("target_mode", [1, 9])
def test_a_target_mode_outside_the_leading_modes_is_refused(target_mode: int):
    """PC1 (the pattern every component shares) and modes beyond ``n_leading`` (8) cannot be
    steered along; the error names the range before anything runs."""
    from pydantic import ValidationError

    from flows.parameters import InduceParameters

    with pytest.raises(ValidationError, match=r"target_mode .* must be a leading mode"):
        InduceParameters(target_mode=target_mode)


def test_the_embed_mode_config_is_the_formation_run_steering_a_given_mode():
    """``docs/examples/induce_wide_embed_mode.json``: the formation run's substrate, χ and
    sampler (so its stores are reused), steering along PC2 (given, not searched: the
    README's design change of target) with the span extrapolator, retrained without a found
    induction mode, one seed; ``induce_wide_embed_mode_restricted.json`` the same with the
    restricted χ inverted."""
    from flows.parameters import InduceParameters

    root = Path(__file__).parents[2] / "docs/examples"
    formation = InduceParameters(**json.loads((root / "induce_wide_formation.json").read_text()))
    embed = InduceParameters(**json.loads((root / "induce_wide_embed_mode.json").read_text()))
    same = ("preset", "data", "train", "chi_checkpoints", "weights_step", "sampler", "out_dir")
    assert all(getattr(embed, k) == getattr(formation, k) for k in same)
    assert embed.probe_seqs == formation.probe_seqs and embed.ratio == 4.0
    assert (embed.target_mode, embed.extrapolator, embed.retrain_without_mode) == (2, "span", True)
    assert embed.report_dir != formation.report_dir
    restricted = json.loads((root / "induce_wide_embed_mode_restricted.json").read_text())
    restricted_params = InduceParameters(**restricted)
    assert restricted_params.chi_estimator == "restricted"
    # the loop reads ⟨φ_C⟩ only: 4 chains × 50 draws, the baseline measured again with it
    assert restricted_params.loop_sampler == {"num_chains": 4, "num_draws": 50}
    # ``induce_wide_embed_mode_from_checkpoint.json``: the same, re-weighted only from the
    # χ checkpoint on, the loop one checkpoint later
    late = json.loads((root / "induce_wide_embed_mode_from_checkpoint.json").read_text())
    late_params = InduceParameters(**late)
    assert (late_params.weights_from_step, late_params.loop_step) == (5000, 5250)
    moved = ("report_dir", "weights_from_step", "loop_step")
    assert {k: v for k, v in late.items() if k not in moved} == {
        k: v for k, v in restricted.items() if k != "report_dir"
    }
    different = ("chi_estimator", "report_dir", "loop_sampler")
    assert {k: v for k, v in restricted.items() if k not in different} == {
        k: v
        for k, v in json.loads((root / "induce_wide_embed_mode.json").read_text()).items()
        if k != "report_dir"
    }


def test_the_circuit_cells_config_reads_the_published_chi_it_names():
    """``docs/examples/induce_wide_circuit_cells.json``: χ at 4,000 from the published file of
    ``induce_wide_from4000.json`` (same probes: natural and synthetic; its sha256 matches),
    the circuit as target with the reference's published later scores, cell weights, from
    initialization, with the restricted design's training settings (so the one-off runs of
    ``scripts/induce_circuit_cells.py`` are the flow's), three seeds."""
    from flows.parameters import InduceParameters
    from patterning_core.model.checkpoints import file_sha256

    repo = Path(__file__).parents[2]
    root = repo / "docs/examples"
    cells = InduceParameters(**json.loads((root / "induce_wide_circuit_cells.json").read_text()))
    chi_design = InduceParameters(**json.loads((root / "induce_wide_from4000.json").read_text()))
    restricted = InduceParameters(
        **json.loads((root / "induce_wide_embed_mode_restricted.json").read_text())
    )
    assert file_sha256(repo / cells.published_chi) == cells.published_chi_sha256
    assert cells.chi_workload() == chi_design.chi_workload()
    assert cells.weights_step == chi_design.weights_step == 4000
    assert cells.train == restricted.train and cells.weights_from_step == 0
    assert (cells.target, cells.extrapolator, cells.chi_estimator) == (
        "circuit",
        "cells",
        "restricted",
    )
    published = repo / "docs/results/induction_patterning/natural_wide_embed_mode_from_checkpoint"
    scores = json.loads((published / "results.json").read_text())["reference"]["later_scores"]
    assert cells.circuit_scores == scores and cells.seeds == [0, 1, 2]
