"""The ``spacing`` flow end to end on tiny sizes: a small Python corpus (the standard
library's ``json`` package), the ``demo`` preset for 40 steps, χ through the sharded flow,
weights, retraining, report; a rerun trains and samples nothing.

Marked ``slow``: the ``spacing-fin`` flow's test (``test_spacing_fin_flow.py``) goes through
the same layers (corpus training, sharded χ, weights, retraining of several conditions,
report, a rerun that recomputes nothing), and the default suite must stay under its time
limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TRAIN = {
    "steps": 40,
    "batch_size": 8,
    "lr": 3e-3,
    "warmup_steps": 4,
    "seed": 0,
    "checkpoint_steps": [0, 20, 40],
}
SAMPLER = {
    "step_size": 1e-4,
    "n_beta": 10.0,
    "localization": 100.0,
    "num_chains": 2,
    "num_draws": 4,
    "batch_size": 8,
}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_spacing_flow_end_to_end_and_rerun_does_nothing(tmp_path, prefect_server):
    from flows.parameters import SpacingParameters
    from flows.spacing import spacing
    from patterning_core.data.lm_data import load_lm_tokens
    from patterning_core.experiments.spacing.science import spacing_units
    from patterning_core.model.transformer import preset

    data = {"source": "corpus", "paths": [str(Path(json.__file__).parent)]}
    params = {
        "preset": "demo",
        "data": data,
        "train": TRAIN,
        "seeds": [0],
        "chi_step": 20,
        "alpha": 1.0,
        "sampler": SAMPLER,
        "sgld_seqs": 64,
        "probe_seqs": 4,
        "eval_seqs": 8,
        "out_dir": str(tmp_path / "out"),
        "runs_root": str(tmp_path / "runs"),
        "n_workers": 1,
    }
    first = spacing(SpacingParameters(**params))
    assert [(r["condition"], r["seed"]) for r in first["rows"]] == [
        ("baseline", 0),
        ("amplify", 0),
        ("suppress", 0),
    ]
    # The seed-0 baseline is the reference run, trained before χ: only the two weighted
    # runs train inside the retraining step.
    assert first["trained_steps"] == 2 * TRAIN["steps"]
    report = Path(first["report"]).read_text()
    assert "Spacing mode: **" in report and (tmp_path / "out" / "spacing.png").is_file()

    # Amplify and Suppress move the whitespace targets' weights in opposite directions.
    weights = json.loads((tmp_path / "out" / "weights.json").read_text())
    tokens = load_lm_tokens(data, preset("demo"))
    is_space = spacing_units(tokens.train, tokens.token_strings).numpy()
    assert is_space.any()
    shift = {k: float(np.load(f["path"])[is_space].mean() - 1) for k, f in weights["files"].items()}
    assert shift["induce"] * shift["repress"] < 0, shift

    again = spacing(SpacingParameters(**params))
    assert first["chi_shards_computed"] > 0
    assert again["trained_steps"] == 0 and again["chi_shards_computed"] == 0
    assert again["rows"] == first["rows"]
