"""Prefect task: train a transformer preset with its checkpoint schedule.

Memoized by content: the run directory is named by a digest of (architecture, data spec,
training settings), and training resumes from the last checkpoint found there, so a
second call with the same settings trains nothing and a killed one continues.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from prefect import get_run_logger, task

from patterning_core.checkpoints import list_checkpoints
from patterning_core.lm_data import load_lm_tokens
from patterning_core.plots import plot_loss_curve
from patterning_core.training import TrainConfig, train
from patterning_core.transformer import preset as get_preset


def run_key(preset: str, data: dict, train_settings: dict) -> str:
    cfg = get_preset(preset).to_dict()
    blob = json.dumps({"model": cfg, "data": data, "train": train_settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@task(name="train-model")
def train_model(
    preset: str, data: dict, train_settings: dict, runs_root: str, threads: int = 1
) -> dict:
    """Train (or resume) and return ``{"run_dir", "checkpoints": [{"step", "path"}], ...}``."""
    logger = get_run_logger()
    torch.set_num_threads(threads)
    config = get_preset(preset)
    settings = dict(train_settings)
    if settings.get("checkpoint_steps") is not None:
        settings["checkpoint_steps"] = tuple(settings["checkpoint_steps"])
    tc = TrainConfig(**settings)
    run_dir = Path(runs_root) / f"{preset}-{run_key(preset, data, train_settings)}"
    tokens = load_lm_tokens(data, config)
    result = train(
        config,
        tokens.train,
        tc,
        run_dir=run_dir,
        resume=True,
        progress=False,
        val_tokens=tokens.val[:256],
    )
    if result.resumed_from is not None:
        logger.info("resumed %s from step %d", run_dir, result.resumed_from)
    if result.steps:
        plot_loss_curve(
            result.steps,
            result.losses,
            run_dir / "loss.png",
            val_steps=result.val_steps,
            val_losses=result.val_losses,
        )
    checkpoints = [{"step": s, "path": str(p)} for s, p in list_checkpoints(run_dir)]
    logger.info("%s: %d checkpoints up to step %d", run_dir, len(checkpoints), tc.steps)
    return {"run_dir": str(run_dir), "checkpoints": checkpoints, "preset": preset}
