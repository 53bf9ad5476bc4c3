"""Training with weights outside a flow lands in the folder the flow's task would use."""

import numpy as np
import torch

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.model.checkpoints import file_sha256, list_checkpoints
from patterning_core.model.transformer import preset
from tasks.retraining import train_with_weights, weighted_run_dir

DATA = {"source": "synthetic", "preset": "tiny", "n_seqs": 64, "seed": 0}
TRAIN = {"steps": 8, "batch_size": 8, "lr": 3e-3, "seed": 0, "checkpoint_steps": [0, 4, 8]}


def test_train_with_weights_uses_the_flows_folder_and_resumes(tmp_path):
    tokens = load_lm_tokens(DATA, preset("tiny"))
    shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=shape).astype(np.float32)
    runs = str(tmp_path / "runs")
    run_dir = train_with_weights("tiny", DATA, TRAIN, weights, tmp_path / "w", runs, tokens, "test")
    (saved,) = (tmp_path / "w").glob("*.npy")
    digest = file_sha256(saved)
    assert run_dir == weighted_run_dir(runs, "tiny", DATA, TRAIN, digest)
    assert [s for s, _ in list_checkpoints(run_dir)] == [0, 4, 8]
    last = list_checkpoints(run_dir)[-1][1]
    before = last.stat().st_mtime_ns
    again = train_with_weights("tiny", DATA, TRAIN, weights, tmp_path / "w", runs, tokens, "x")
    assert again == run_dir and last.stat().st_mtime_ns == before  # resumed: nothing trained


def test_a_run_reweighted_from_a_step_starts_from_the_uniform_prefix_run(tmp_path):
    """With ``weights_from_step`` the uniform run up to that step is trained once in its own
    memoized folder and the weighted run starts from it; the result is the run trained
    from the start, bit for bit."""
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.training import load_train_log, train
    from tasks.retraining import UNIFORM, uniform_prefix_settings
    from tasks.training import train_config

    tokens = load_lm_tokens(DATA, preset("tiny"))
    shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
    weights = np.random.default_rng(1).uniform(0.5, 1.5, size=shape).astype(np.float32)
    late = {**TRAIN, "weights_from_step": 4}
    runs = str(tmp_path / "runs")
    run_dir = train_with_weights("tiny", DATA, late, weights, tmp_path / "w", runs, tokens, "t")
    prefix = weighted_run_dir(runs, "tiny", DATA, uniform_prefix_settings(late), UNIFORM)
    assert [s for s, _ in list_checkpoints(prefix)] == [0, 4]
    assert len(load_train_log(run_dir)["loss"]) == 8  # 4 from the prefix, 4 trained here
    direct = train(
        preset("tiny"),
        tokens.train,
        train_config(late),
        weights=torch.from_numpy(weights),
        run_dir=tmp_path / "direct",
        progress=False,
    )
    final = load_checkpoint(list_checkpoints(run_dir)[-1][1]).params
    for name, value in direct.params.items():
        assert torch.equal(final[name], value.detach()), name
    assert uniform_prefix_settings(TRAIN) is None
