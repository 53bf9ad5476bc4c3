"""Prefect task: retrain a transformer preset with per-token data weights ρ.

Tasks pass paths, never arrays: ρ ``float32 [N, T − 1]`` is a ``.npy`` file named by the
SHA-256 of its bytes (:func:`save_weights`), passed as (path, digest); the task checks the
digest before training. Memoized by content: the run folder is named by a digest of
(architecture, data spec, training settings, weights digest) and ``training.train`` resumes
from its last checkpoint there, so a second call trains nothing and a killed one continues.
Uniform weights (no file) use exactly the folder ``tasks.training.train_model`` uses for the
same settings, so the pipeline's reference run is the seed's baseline.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task

from patterning_core.data.lm_data import LMTokens, load_lm_tokens
from patterning_core.experiments.induction.metrics import FORMATION_THRESHOLD, induction_curve
from patterning_core.experiments.induction.patterning import loss_by_class
from patterning_core.model.checkpoints import file_sha256, list_checkpoints, load_checkpoint
from patterning_core.model.training import copy_run_prefix, load_train_log
from patterning_core.model.transformer import preset as get_preset
from patterning_core.sampling.config import ConfigError
from patterning_core.workspace import settings_digest
from tasks.training import check_training_inputs, model_preset, run_key, train_in_run_dir

UNIFORM = "uniform"


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_weights(weights: np.ndarray, folder: str | os.PathLike[str]) -> tuple[str, str]:
    """Write ρ as ``folder/<digest[:16]>.npy`` (atomic; kept if already there).

    Returns ``(path, digest)`` with ``digest`` the SHA-256 of the file's bytes.
    """
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(weights, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    digest = bytes_digest(data)
    path = Path(folder) / f"{digest[:16]}.npy"
    if not (path.is_file() and file_sha256(path) == digest):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path), digest


def load_weights(path: str | os.PathLike[str], digest: str, shape: tuple[int, int]) -> torch.Tensor:
    """ρ from ``path`` after checking its SHA-256 and shape (never unpickles)."""
    found = file_sha256(path)
    if found != digest:
        raise ConfigError(
            f"weights file {path} has SHA-256 {found[:16]}…, expected {digest[:16]}…: it changed "
            "since the weights were computed; compute them again."
        )
    weights = np.load(path, allow_pickle=False)
    if weights.shape != shape:
        raise ConfigError(
            f"weights file {path} has shape {list(weights.shape)}, the training data need "
            f"{list(shape)} (one weight per loss unit [N, T − 1])."
        )
    return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))


def weighted_run_dir(
    runs_root: str, preset: str, data: dict, train_settings: dict, weights_digest: str
) -> Path:
    """The run folder: ``train_model``'s for uniform weights, else keyed on the weights too."""
    if weights_digest == UNIFORM:
        return Path(runs_root) / f"{preset}-{run_key(preset, data, train_settings)}"
    key = settings_digest(
        {
            "model": get_preset(preset).to_dict(),
            "data": data,
            "train": train_settings,
            "weights": weights_digest,
        },
        length=16,
    )
    return Path(runs_root) / f"{preset}-w{key}"


def train_with_weights(
    preset: str,
    data: dict,
    train_settings: dict,
    weights: np.ndarray,
    weights_dir: str | os.PathLike[str],
    runs_root: str,
    tokens: LMTokens,
    label: str,
) -> Path:
    """Outside a flow (scripts, notebooks): write ρ ``[N, T − 1]`` as ``retrain_weighted``
    reads it, then train (or resume) in the folder that task would use for the same
    settings, so a flow later finds the run done (with ``weights_from_step``, from the
    uniform prefix run, trained first if needed). Returns the run folder."""
    tc = check_training_inputs(preset, data, train_settings)
    _, digest = save_weights(weights, weights_dir)
    run_dir = weighted_run_dir(runs_root, preset, data, train_settings, digest)
    prefix_dir = train_uniform_prefix(preset, data, train_settings, runs_root, tokens)
    if prefix_dir is not None:
        copy_run_prefix(run_dir, prefix_dir, up_to_step=int(train_settings["weights_from_step"]))
    train_in_run_dir(
        model_preset(preset),
        tokens,
        tc,
        run_dir,
        weights=torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)),
        title=f"training loss (unweighted) {label}".strip(),
    )
    return run_dir


def train_uniform_prefix(
    preset: str, data: dict, train_settings: dict, runs_root: str, tokens: LMTokens
) -> Path | None:
    """Outside a flow: train (or resume, or find done) the uniform prefix run of
    ``train_settings`` (:func:`uniform_prefix_settings`) in the folder ``train_model`` uses
    for it; its folder, or None when the weights apply from the start."""
    prefix = uniform_prefix_settings(train_settings)
    if prefix is None:
        return None
    prefix_dir = weighted_run_dir(runs_root, preset, data, prefix, UNIFORM)
    tc = check_training_inputs(preset, data, prefix)
    train_in_run_dir(model_preset(preset), tokens, tc, prefix_dir)
    return prefix_dir


def uniform_prefix_settings(train_settings: dict) -> dict | None:
    """The uniform run that a run re-weighted from step ``s`` (``weights_from_step``) is
    up to ``s``: the same settings, no weights, ``steps = s``. None when the weights apply
    from the start."""
    start = int(train_settings.get("weights_from_step", 0))
    if not start:
        return None
    uniform = {k: v for k, v in train_settings.items() if k != "weights_from_step"}
    return {**uniform, "steps": start}


def seed_from_uniform_prefix(
    run_dir: str | os.PathLike[str], runs_root: str, preset: str, data: dict, train_settings: dict
) -> int | None:
    """Put the first ``weights_from_step`` steps of the run into the empty ``run_dir`` from
    the uniform prefix run (:func:`uniform_prefix_settings`; ``train_model`` trains it),
    so that training resumes at the step the weights start from. Returns that step, or None
    when nothing was seeded (no prefix, a prefix not yet trained, or ``run_dir`` not empty):
    the run then trains from the start, with the same result."""
    prefix = uniform_prefix_settings(train_settings)
    if prefix is None:
        return None
    source = weighted_run_dir(runs_root, preset, data, prefix, UNIFORM)
    return copy_run_prefix(run_dir, source, up_to_step=prefix["steps"])


@task(name="retrain-weighted")
def retrain_weighted(
    preset: str,
    data: dict,
    train_settings: dict,
    weights_path: str | None,
    weights_digest: str,
    runs_root: str,
    threads: int = 1,
    label: str = "",
) -> dict:
    """Train (or resume) ``preset`` with ρ from ``weights_path`` (None: uniform, digest
    ``"uniform"``); return its induction curve and final validation loss.

    Returns ``{"label", "run_dir", "seed", "weights_digest", "trained_steps",
    "resumed_from", "steps", "best", "formation_step", "threshold", "chance", "val_steps",
    "val_loss", "final_val_loss", "final_val_loss_by_class"}``:

    - ``best``: the best layer-1 prefix-matching score at each checkpoint;
    - ``formation_step``: the first checkpoint where it reaches ``threshold``
      (``induction.FORMATION_THRESHOLD``; None: not formed);
    - ``final_val_loss``: unweighted mean loss on the validation sequences at the last step
      (``final_val_loss_by_class``: per pattern class of the predicted token);
    - ``trained_steps``: optimizer steps this call ran (0 when the run was complete).
    """
    tc = check_training_inputs(preset, data, train_settings)
    if (weights_path is None) != (weights_digest == UNIFORM):
        raise ConfigError("give a weights file with its digest, or no file and 'uniform'.")
    config = model_preset(preset)
    logger = get_run_logger()
    torch.set_num_threads(threads)
    run_dir = weighted_run_dir(runs_root, preset, data, train_settings, weights_digest)
    tokens = load_lm_tokens(data, config)
    shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
    weights = None if weights_path is None else load_weights(weights_path, weights_digest, shape)
    if weights is not None:
        seeded = seed_from_uniform_prefix(run_dir, runs_root, preset, data, train_settings)
        if seeded is not None:
            logger.info("%s %s: steps up to %d from the uniform prefix run", label, run_dir, seeded)
    title = f"training loss (unweighted) {label}".strip()
    result = train_in_run_dir(config, tokens, tc, run_dir, weights=weights, title=title)
    start = result.resumed_from or 0
    trained = tc.steps - start
    logger.info("%s %s: trained %d steps (from step %d)", label, run_dir, trained, start)
    curve = induction_curve(run_dir, config)
    log = load_train_log(run_dir)
    final = load_checkpoint(list_checkpoints(run_dir)[-1][1], expected_config=config)
    return {
        "label": label,
        "run_dir": str(run_dir),
        "seed": tc.seed,
        "weights_digest": weights_digest,
        "trained_steps": trained,
        "resumed_from": result.resumed_from,
        "steps": curve.steps,
        "best": curve.best,
        "formation_step": curve.formation_step,
        "threshold": FORMATION_THRESHOLD,
        "chance": curve.chance,
        "val_steps": log["val_steps"],
        "val_loss": log["val_loss"],
        "final_val_loss": log["val_loss"][-1] if log["val_loss"] else None,
        "final_val_loss_by_class": loss_by_class(
            final.params, config, tokens.val[:256], tokens.token_strings
        ),
    }
