"""Prefect task: train a transformer preset with its checkpoint schedule.

Memoized by content: the run directory is named by a digest of (architecture, data spec,
training settings), and training resumes from the last checkpoint found there, so a
second call with the same settings trains nothing and a killed one continues.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
from prefect import get_run_logger, task

from patterning_core.data.lm_data import LMTokens, check_data_spec, load_lm_tokens
from patterning_core.model.checkpoints import list_checkpoints
from patterning_core.model.training import TrainConfig, TrainResult, train
from patterning_core.model.transformer import TransformerConfig
from patterning_core.model.transformer import preset as get_preset
from patterning_core.report.plots import plot_loss_curve
from patterning_core.sampling.config import ConfigError
from patterning_core.workspace import settings_digest


def model_preset(name: str) -> TransformerConfig:
    """The named transformer preset; an unknown name is a ``ConfigError`` listing them."""
    try:
        return get_preset(name)
    except ValueError as err:
        raise ConfigError(f"{err}. Set `preset` to one of them.") from None


def train_config(settings: Mapping) -> TrainConfig:
    """``TrainConfig`` from JSON-able settings; bad settings are a ``ConfigError``."""
    settings = dict(settings)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown train setting(s) {unknown}; valid settings are {sorted(known)}."
        )
    if "steps" not in settings:
        raise ConfigError("train settings need `steps` (the number of optimizer steps).")
    if settings.get("checkpoint_steps") is not None:
        settings["checkpoint_steps"] = tuple(settings["checkpoint_steps"])
    try:
        config = TrainConfig(**settings)
        config.schedule()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"train: {err}.") from err
    return config


def check_training_inputs(preset: str, data: Mapping, train_settings: Mapping) -> TrainConfig:
    """Validate a training request before anything is written: the preset, the training
    settings and the data spec against the model (see ``lm_data.check_data_spec``)."""
    config = model_preset(preset)
    tc = train_config(train_settings)
    check_data_spec(data, config)
    return tc


def run_key(preset: str, data: dict, train_settings: dict) -> str:
    cfg = get_preset(preset).to_dict()
    return settings_digest({"model": cfg, "data": data, "train": train_settings}, length=16)


def train_in_run_dir(
    config: TransformerConfig,
    tokens: LMTokens,
    tc: TrainConfig,
    run_dir: Path,
    weights: torch.Tensor | None = None,
    title: str = "training loss",
) -> TrainResult:
    """Train (or resume) into ``run_dir`` with validation on 256 held-out sequences, and
    redraw the loss curve (``run_dir/loss.png``) when this call trained anything."""
    result = train(
        config,
        tokens.train,
        tc,
        weights=weights,
        run_dir=run_dir,
        resume=True,
        progress=False,
        val_tokens=tokens.val[:256],
    )
    if result.steps and tc.steps > (result.resumed_from or 0):
        plot_loss_curve(
            result.steps,
            result.losses,
            run_dir / "loss.png",
            val_steps=result.val_steps,
            val_losses=result.val_losses,
            title=title,
        )
    return result


@task(name="train-model")
def train_model(
    preset: str, data: dict, train_settings: dict, runs_root: str, threads: int = 1
) -> dict:
    """Train (or resume) and return ``{"run_dir", "checkpoints": [{"step", "path"}], ...}``."""
    tc = check_training_inputs(preset, data, train_settings)
    config = model_preset(preset)
    logger = get_run_logger()
    torch.set_num_threads(threads)
    run_dir = Path(runs_root) / f"{preset}-{run_key(preset, data, train_settings)}"
    tokens = load_lm_tokens(data, config)
    result = train_in_run_dir(config, tokens, tc, run_dir)
    if result.resumed_from is not None:
        logger.info("resumed %s from step %d", run_dir, result.resumed_from)
    checkpoints = [{"step": s, "path": str(p)} for s, p in list_checkpoints(run_dir)]
    logger.info("%s: %d checkpoints up to step %d", run_dir, len(checkpoints), tc.steps)
    return {"run_dir": str(run_dir), "checkpoints": checkpoints, "preset": preset}
