"""The ``spacing-fin`` flow end to end on tiny sizes: a small Python corpus (the standard
library's ``json`` package) tokenized with every whitespace character a token, the
``demo`` preset for 40 steps, χ at its last checkpoint and at its initialization through the
sharded flow, the fin, the weights, five conditions retrained (the fifth along a further
mode, planned before retraining), χ on each, report; a rerun recomputes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.experiments.test_spacing_flow import SAMPLER, TRAIN, prefect_server

__all__ = ["prefect_server"]  # the module's Prefect test server, shared with the spacing flow


@pytest.mark.timeout(900)
def test_spacing_fin_flow_end_to_end(tmp_path, prefect_server):
    from flows.parameters import SpacingFinParameters
    from flows.spacing_fin import spacing_fin

    data = {"source": "corpus", "paths": [str(Path(json.__file__).parent)], "whitespace": "split"}
    params = SpacingFinParameters(
        preset="demo",
        data=data,
        train=TRAIN,
        seeds=[0],
        chi_checkpoints=[40],
        weights_step=40,
        sampler=SAMPLER,
        sgld_seqs=32,
        probe_seqs=4,
        eval_seqs=8,
        out_dir=str(tmp_path / "out"),
        runs_root=str(tmp_path / "runs"),
        n_workers=1,
    )
    first = spacing_fin(params)
    results = json.loads(Path(first["results"]).read_text())
    # χ at the χ checkpoint and at the initialization (its own store), the floor of the fin
    assert results["checkpoints"] == [0, 40]
    assert (tmp_path / "out" / "chi_init_seed0.zarr").is_dir()
    init_row = results["growth"][0]
    assert init_row["step"] == 0 and "beyond_init" not in init_row["decoding"]
    assert results["fin_metric_initialization"] == init_row["metric"]
    assert results["probe_tokens"] == 4 * 63
    assert [(r["condition"], r["seed"]) for r in results["runs"]] == [
        ("baseline", 0),
        ("collapse_whitespace", 0),
        ("chi_suppress", 0),
        ("control_dose", 0),
        ("chi_further_mode", 0),
    ]
    for r in results["runs"]:
        assert 0 <= r["fin_metric"] <= 1 and np.isfinite(r["loss_whitespace"])
        # position from χ beyond the loss: a difference of two Spearman ρ
        assert -2 <= r["fin_beyond_loss"] <= 2
        assert -2 <= r["fin_beyond_init"] <= 2  # every condition read against seed 0's init
        # the fin mode of one chain against that of the other (2 chains: halves of one)
        assert 0 <= r["fin_found_again"] <= 1
    assert results["fin_beyond_loss_reference"] == results["runs"][0]["fin_beyond_loss"]
    assert results["runs"][0]["cut"] == 0.0  # the baseline against itself
    assert results["fin_beyond_init_reference"] == results["runs"][0]["fin_beyond_init"]
    assert set(results["targets_init_controlled"]) == {
        "baseline_fin_learned_every_seed",
        "suppress_halves_every_seed",
        "control_cuts_less_than_a_quarter",
        "collapse_removes_the_fin",
    }
    assert set(results["targets"]) == {
        "reference_fin_at_least_0.6",
        "suppress_halves_every_seed",
        "control_cuts_less_than_a_quarter",
        "collapse_removes_the_fin",
    }
    # the seed-0 baseline's χ is the reference store's; the other four have their own
    assert len(list((tmp_path / "out" / "retrained").glob("*.zarr"))) == 4
    # the further mode: planned (and written) before retraining, read on every run
    plan = json.loads((tmp_path / "out" / "further_mode_plan.json").read_text())["summary"]
    further = results["further_mode"]
    assert further["plan"]["mode"] == plan["mode"] >= 2
    assert plan["mode"] != plan["fin_mode"] and plan["pattern_class"] != "space_run"
    assert len(plan["predicted_shift"]) == len(plan["components"]) == 18
    assert [r["condition"] for r in further["runs"]] == [r["condition"] for r in results["runs"]]
    (seed0,) = further["outcome"]["seeds"]
    assert set(seed0["conditions"]) == {
        "collapse_whitespace",
        "chi_suppress",
        "control_dose",
        "chi_further_mode",
    }
    assert -1 <= seed0["loop"]["cosine"] <= 1
    assert "## A further mode, amplified" in Path(first["report"]).read_text()
    # the sampler noise: the reference's χ again with SGLD seed 1, read the same way
    assert (tmp_path / "out" / "chi_replica.zarr").is_dir()
    noise = results["sampler_noise"]
    assert noise["fin_metric"][0] == results["fin_metric_reference"]
    assert noise["separation"][0] == further["runs"][0]["further"]["separation"]["separation"]
    assert noise["fin_metric"][1] != noise["fin_metric"][0]  # another SGLD seed
    assert "## Sampler noise" in Path(first["report"]).read_text()
    assert results["growth"][-1]["found_again"]["chains_per_half"] == 1
    assert "found again" in Path(first["report"]).read_text()
    shares = results["weights"]["whitespace_share"]
    assert shares["control_dose"] == pytest.approx(shares["chi_suppress"], rel=1e-5)
    assert "## Targets" in Path(first["report"]).read_text()
    assert (tmp_path / "out" / "fin.png").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    again = spacing_fin(params)
    assert again["targets"] == first["targets"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamps


def test_the_published_long_context_config_is_valid():
    """``docs/examples/spacing_fin_long.json`` (the run behind docs/results/spacing/fin_long)
    is a valid ``spacing-fin`` configuration of the 256-token-context substrate."""
    from flows.parameters import SpacingFinParameters

    path = Path(__file__).parents[2] / "docs/examples/spacing_fin_long.json"
    params = SpacingFinParameters(**json.loads(path.read_text()))
    assert params.preset == "demo_long" and params.data["whitespace"] == "split"
    assert params.weights_step in params.chi_checkpoints


@pytest.mark.parametrize(
    ("name", "preset_name", "seed", "steps", "chi_files"),
    [
        ("spacing_fin_12000", "demo_long", 0, 12000, {"chi": [0, 3000, 12000]}),
        ("spacing_fin_wide", "fin_wide", 0, 6000, {"chi": [0, 3000, 6000]}),
        ("spacing_fin_deep", "fin_deep", 0, 6000, {"chi": [0, 3000], "chi_6000": [6000]}),
        ("spacing_fin_deep_seed1", "fin_deep", 1, 6000, {"chi": [0], "chi_6000": [6000]}),
    ],
)
def test_the_substrate_check_configs_are_valid(tmp_path, name, preset_name, seed, steps, chi_files):
    """``docs/examples/<name>_train.json`` and ``<name>_<chi file>.json`` (the substrate checks
    in the README's spacing section: demo_long trained 4× longer, the wider-headed
    ``fin_wide``, the four-layer ``fin_deep``, whose last step went to a store of its own): a
    valid ``train`` configuration on the data and optimizer of ``spacing_fin_long.json``, and
    ``susceptibilities`` configurations on the same workload and sampler at the run's
    initialization, step 3,000 and its last step (checked against stand-in checkpoint files
    of the preset: the real ones exist after training)."""
    from flows.parameters import SusceptibilityParameters, TrainParameters
    from patterning_core.model.checkpoints import save_checkpoint
    from patterning_core.model.transformer import init_params, preset

    root = Path(__file__).parents[2] / "docs/examples"
    long = json.loads((root / "spacing_fin_long.json").read_text())
    train = TrainParameters(**json.loads((root / f"{name}_train.json").read_text()))
    assert (train.preset, train.data) == (preset_name, long["data"])
    assert (train.train["steps"], train.train["seed"]) == (steps, seed)
    same = {
        k: v for k, v in long["train"].items() if k not in ("steps", "checkpoint_steps", "seed")
    }
    assert {k: train.train[k] for k in same} == same

    config = preset(train.preset)
    stores = set()
    for chi_file, chi_steps in chi_files.items():
        spec = json.loads((root / f"{name}_{chi_file}.json").read_text())
        for ckpt in spec["checkpoints"]:
            assert Path(ckpt["path"]).name == f"step_{ckpt['step']:08d}.safetensors"
            ckpt["path"] = str(
                save_checkpoint(
                    tmp_path / Path(ckpt["path"]).name, init_params(config), config, ckpt["step"], 0
                )
            )
        chi = SusceptibilityParameters(**spec)
        assert chi.sampler == long["sampler"] and chi.workload["data"] == long["data"]
        assert [c["step"] for c in chi.checkpoints] == chi_steps
        assert all(c["step"] in train.train["checkpoint_steps"] for c in chi.checkpoints)
        stores.add(chi.store)
    assert len(stores) == len(chi_files)  # a store holds one layout of checkpoints


def test_the_fin_deep_replica_samples_the_same_initialization_with_another_sgld_seed():
    """``spacing_fin_deep_chi_step0_sampler1.json`` (a control of the fin_deep substrate check:
    χ of the same initialization estimated again) is ``spacing_fin_deep_chi.json``'s step 0
    with only the SGLD seed and the store changed."""
    root = Path(__file__).parents[2] / "docs/examples"
    main = json.loads((root / "spacing_fin_deep_chi.json").read_text())
    replica = json.loads((root / "spacing_fin_deep_chi_step0_sampler1.json").read_text())
    assert replica["checkpoints"] == main["checkpoints"][:1]
    assert replica["sampler"] == {**main["sampler"], "seed": 1} != main["sampler"]
    assert replica["store"] != main["store"] and replica["workload"] == main["workload"]
