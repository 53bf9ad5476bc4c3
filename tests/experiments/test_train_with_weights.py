"""Training with weights outside a flow lands in the folder the flow's task would use."""

import numpy as np

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
