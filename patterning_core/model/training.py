"""Training the attention-only transformer: weighted loss, checkpoint schedule, exact resume.

Conventions:

- Training data is ``tokens: int64 [N, T]`` (``T <= n_ctx``). Step ``s`` (0-based) uses the
  sequences at data positions ``s * B .. s * B + B - 1`` of an endless stream made of one
  seeded random permutation of ``0 .. N-1`` per epoch (:func:`batch_indices`). The data order
  depends only on ``(seed, N, B)`` and the initialization only on ``(config, seed)``: two runs
  with the same seed and different weights ρ see the same batches from the same start.
- Optional per-token loss weights ``weights: float [N, T - 1]`` (ρ, aligned with the loss units
  of :func:`patterning_core.model.transformer.per_token_loss`, non-negative). A step minimizes
  ``Σ ρ ℓ / Σ ρ`` over its batch (normalized by the batch's weight sum). Without weights it is
  the plain mean. The logged ``loss`` is always the unweighted batch mean (comparable across ρ);
  ``objective`` is the weighted one.
- Optimizer AdamW, linear warm-up over ``warmup_steps`` then constant learning rate, optional
  gradient-norm clipping. No dropout, so nothing else is random.
- Checkpoints (``run_dir/step_XXXXXXXX.safetensors``) at the steps of the schedule (step 0 is
  the initialization). The optimizer state of the latest checkpoint sits beside it
  (``.optim.safetensors``; older ones are deleted); ``train_log.json`` holds the loss history.
  With ``resume=True`` a run directory that already has checkpoints continues from the last
  one and reproduces the uninterrupted run exactly (same data order, same optimizer state).
- A run with ``weights_from_step = s`` is the uniform run of the same settings up to step
  ``s``. So it may resume from a checkpoint at step ``<= s`` of that uniform run
  (:func:`copy_run_prefix` puts one in place): weighted conditions re-weighted from one
  checkpoint share their first ``s`` steps instead of each training them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from patterning_core.model.checkpoints import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    safetensors_bytes,
    save_checkpoint,
)
from patterning_core.model.transformer import TransformerConfig, init_params, loss_per_token

LOG_NAME = "train_log.json"


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings.

    Attributes:
        steps: total optimizer steps.
        batch_size: sequences per step.
        lr: peak learning rate (constant after warm-up).
        weight_decay: AdamW decoupled weight decay.
        beta1, beta2: AdamW betas.
        warmup_steps: linear warm-up from 0 to ``lr``.
        grad_clip: clip the global gradient norm at this value (None: no clipping).
        seed: initialization and data-order seed.
        checkpoint_steps: explicit checkpoint steps (None: :func:`checkpoint_schedule`).
        fused: compute the loss through the fused attention kernel and chunked readout loss
            (``transformer.loss_per_token(..., fused=True)``): same arithmetic up to float
            rounding, about 2.8× faster per step at context 256, no faster at context 64.
            Off by default so that runs recorded with the reference path reproduce exactly.
        weights_from_step: the data weights ρ apply from this step on; before it the run
            trains on the unweighted loss, exactly as the uniform run of the same seed does
            (0: from the start). Re-weighting from a checkpoint w* is the regime in which
            χ at w* predicts the response.
    """

    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_steps: tuple[int, ...] | None = None
    fused: bool = False
    weights_from_step: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError("TrainConfig needs steps >= 0, batch_size >= 1, warmup_steps >= 0")
        if self.weights_from_step < 0:
            raise ValueError(
                f"TrainConfig.weights_from_step must be >= 0, got {self.weights_from_step}"
            )
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")

    def schedule(self) -> list[int]:
        """The checkpoint steps, sorted, always with 0 and ``steps``; listed steps beyond
        ``steps`` are dropped (so a schedule can be cut short by lowering ``steps``)."""
        if self.checkpoint_steps is None:
            return checkpoint_schedule(self.steps)
        bad = [s for s in self.checkpoint_steps if s < 0]
        if bad:
            raise ValueError(f"checkpoint steps must be >= 0, got {bad}")
        return sorted({0, self.steps, *(s for s in self.checkpoint_steps if s <= self.steps)})

    def resume_key(self) -> dict[str, Any]:
        """Settings a resumed run must share with the interrupted one (not ``steps``)."""
        d = dataclasses.asdict(self)
        d.pop("steps")
        d.pop("checkpoint_steps")
        if not self.fused:  # runs from before the option existed keep their fingerprint
            d.pop("fused")
        if not self.weights_from_step:  # the same for weights applied from the start
            d.pop("weights_from_step")
        return d


def checkpoint_schedule(total_steps: int, n_log: int = 20, n_linear: int = 20) -> list[int]:
    """Log-spaced early checkpoints plus linearly spaced ones, sorted and unique.

    ``n_log`` steps log-spaced in ``[1, total_steps]`` (dense early, when structure forms fast)
    union ``n_linear + 1`` evenly spaced steps ``0, total/n_linear, ..., total``.
    """
    if total_steps <= 0:
        return [0]
    steps = {0, total_steps}
    for i in range(n_log):
        steps.add(round(total_steps ** (i / max(n_log - 1, 1))))
    for i in range(n_linear + 1):
        steps.add(round(total_steps * i / n_linear))
    return sorted(s for s in steps if 0 <= s <= total_steps)


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_permutation(n_seqs: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch: a permutation of ``0 .. n_seqs - 1``."""
    gen = torch.Generator().manual_seed(_derived_seed("data-order", seed, epoch))
    return torch.randperm(n_seqs, generator=gen)


def batch_indices(n_seqs: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Indices ``[batch_size]`` of the sequences used at ``step`` (0-based)."""
    return _DataOrder(n_seqs, batch_size, seed)(step)


class _DataOrder:
    """:func:`batch_indices` with the current epoch's permutation cached."""

    def __init__(self, n_seqs: int, batch_size: int, seed: int) -> None:
        self.n, self.b, self.seed = n_seqs, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _perm_of(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.n, self.seed, epoch)
        return self._perm

    def __call__(self, step: int) -> Tensor:
        start = step * self.b
        parts, need = [], self.b
        epoch, offset = divmod(start, self.n)
        while need:
            take = self._perm_of(epoch)[offset : offset + need]
            parts.append(take)
            need -= len(take)
            epoch, offset = epoch + 1, 0
        return torch.cat(parts)


def tensor_digest(t: Tensor | None) -> str | None:
    """sha256 of a tensor's dtype, shape and bytes (None for None)."""
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``losses[i]`` is the unweighted mean loss of step ``steps[i]``
    (1-based: the loss computed before the ``steps[i]``-th update)."""

    params: dict[str, Tensor]
    config: TransformerConfig
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    run_dir: Path | None = None
    resumed_from: int | None = None

    def log_dict(self) -> dict[str, list]:
        return {
            "steps": self.steps,
            "loss": self.losses,
            "objective": self.objectives,
            "val_steps": self.val_steps,
            "val_loss": self.val_losses,
        }


def _check_weights(weights: Tensor | None, tokens: Tensor) -> Tensor | None:
    if weights is None:
        return None
    expected = (tokens.shape[0], tokens.shape[1] - 1)
    if tuple(weights.shape) != expected:
        raise ValueError(
            f"weights must have shape [N, T - 1] = {list(expected)} (one per loss unit of the "
            f"training tokens), got {list(weights.shape)}"
        )
    weights = weights.to(torch.float32)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(
            "weights must be finite and >= 0; clip negative patterning weights at 0 "
            "(or move their mass elsewhere) before training"
        )
    if not weights.sum() > 0:
        raise ValueError("weights sum to 0: at least one loss unit needs a positive weight")
    return weights


def _save_optimizer(path: Path, opt: torch.optim.Optimizer, names: Sequence[str]) -> None:
    state = opt.state_dict()["state"]
    tensors = {}
    for i, name in enumerate(names):
        for key, value in state.get(i, {}).items():
            tensors[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(safetensors_bytes(tensors, {"format": "patterning.optimizer/1"}))
    os.replace(tmp, path)


def _load_optimizer(path: Path, opt: torch.optim.Optimizer, names: Sequence[str]) -> None:
    tensors = load_file(str(path))
    state: dict[int, dict[str, Tensor]] = {}
    for i, name in enumerate(names):
        entry = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
        if entry:
            state[i] = entry
    sd = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def _optim_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name.replace(".safetensors", ".optim.safetensors"))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def lr_at(step: int, train_config: TrainConfig) -> float:
    """Learning rate of the update at 0-based ``step``: linear warm-up, then constant."""
    if train_config.warmup_steps and step < train_config.warmup_steps:
        return train_config.lr * (step + 1) / train_config.warmup_steps
    return train_config.lr


@torch.no_grad()
def evaluate(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor,
    batch_size: int = 64,
    *,
    fused: bool = False,
) -> float:
    """Mean per-token loss of ``params`` on ``tokens [N, T]`` (``fused``: see ``TrainConfig``)."""
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        losses = loss_per_token(params, tokens[i : i + batch_size], config, fused=fused)
        total += float(losses.sum())
        count += losses.numel()
    return total / max(count, 1)


def train(
    config: TransformerConfig,
    tokens: Tensor,
    train_config: TrainConfig,
    weights: Tensor | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    val_tokens: Tensor | None = None,
    callback: Callable[[int, dict[str, Tensor], float], None] | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train from ``init_params(config, train_config.seed)`` on ``tokens`` (see module docs).

    Args:
        config: the architecture.
        tokens: ``int64 [N, T]`` training sequences, ``2 <= T <= n_ctx``, ids ``< d_vocab``.
        train_config: optimization settings and seed.
        weights: optional ρ ``[N, T - 1]``, non-negative.
        run_dir: where checkpoints and ``train_log.json`` go (None: no checkpoints).
        resume: continue from the last checkpoint in ``run_dir`` if there is one.
        progress: show a tqdm progress bar with the running loss.
        val_tokens: optional validation sequences, evaluated (mean loss) at every checkpoint.
        callback: called after every update as ``callback(step, params, loss)`` (``step``
            1-based, ``loss`` the unweighted batch mean); may raise to stop training.
        device: where the parameters, optimizer state and data live while training (None:
            the CPU). The initialization, the data order and the checkpoints (saved on the
            CPU) do not depend on it; the arithmetic does, to rounding.
    """
    if tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be int64 [N, T], got {tokens.dtype} {list(tokens.shape)}")
    N, T = tokens.shape
    if not 2 <= T <= config.n_ctx or N < 1:
        raise ValueError(
            f"tokens [N, T] need N >= 1 and 2 <= T <= n_ctx={config.n_ctx}, got {[N, T]}"
        )
    if int(tokens.min()) < 0 or int(tokens.max()) >= config.d_vocab:
        raise ValueError(
            f"token ids must lie in [0, {config.d_vocab}); got [{int(tokens.min())}, "
            f"{int(tokens.max())}]. Use a tokenizer with d_vocab={config.d_vocab} or change "
            "the config"
        )
    weights = _check_weights(weights, tokens)
    tc = train_config
    schedule = tc.schedule()
    fingerprint = {
        "train": tc.resume_key(),
        "data_digest": tensor_digest(tokens),
        "weights_digest": tensor_digest(weights),
    }
    # Before weights_from_step the run is the uniform one: its checkpoints up to there are ours.
    uniform_prefix = None
    if weights is not None and tc.weights_from_step:
        uniform = dataclasses.replace(tc, weights_from_step=0)
        uniform_prefix = (
            tc.weights_from_step,
            {**fingerprint, "train": uniform.resume_key(), "weights_digest": None},
        )

    if device is not None:
        tokens = tokens.to(device)
        weights = weights.to(device) if weights is not None else None
        val_tokens = val_tokens.to(device) if val_tokens is not None else None
    params = {
        k: v.to(device).requires_grad_() if device is not None else v.requires_grad_()
        for k, v in init_params(config, tc.seed).items()
    }
    names = list(params)
    opt = torch.optim.AdamW(
        list(params.values()), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay
    )
    result = TrainResult(params=params, config=config)
    start = 0
    out_dir = Path(run_dir) if run_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.run_dir = out_dir
        existing = list_checkpoints(out_dir)
        if existing and resume:
            start = _resume(
                out_dir, existing, config, fingerprint, params, opt, names, result, uniform_prefix
            )
        elif existing:
            raise FileExistsError(
                f"{out_dir} already holds checkpoints; pass resume=True to continue that run "
                "or choose an empty run_dir"
            )
    if start > tc.steps:
        raise ValueError(f"{out_dir} is already at step {start} > steps={tc.steps}")

    def checkpoint(step: int) -> None:
        if val_tokens is not None:
            result.val_steps.append(step)
            result.val_losses.append(evaluate(params, config, val_tokens, fused=tc.fused))
        if out_dir is None:
            return
        path = save_checkpoint(
            checkpoint_path(out_dir, step),
            params,
            config,
            step,
            step * tc.batch_size,
            extra=fingerprint,
        )
        result.checkpoints.append((step, path))
        _save_optimizer(_optim_path(path), opt, names)
        for _, older in result.checkpoints[:-1]:
            _optim_path(older).unlink(missing_ok=True)
        _write_json(out_dir / LOG_NAME, result.log_dict())

    if start == 0:
        checkpoint(0)
    order = _DataOrder(N, tc.batch_size, tc.seed)
    todo = set(schedule)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc="train", dynamic_ncols=True)
    running = math.nan
    for step in range(start, tc.steps):
        idx = order(step).to(tokens.device)
        batch = tokens[idx]
        losses = loss_per_token(params, batch, config, fused=tc.fused)
        mean_loss = losses.mean()
        if weights is None or step < tc.weights_from_step:
            objective = mean_loss
        else:
            w = weights[idx]
            objective = (w * losses).sum() / w.sum().clamp_min(1e-12)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), tc.grad_clip)
        opt.step()
        loss_value = float(mean_loss.detach())
        result.steps.append(step + 1)
        result.losses.append(loss_value)
        result.objectives.append(float(objective.detach()))
        running = loss_value if math.isnan(running) else 0.98 * running + 0.02 * loss_value
        if bar is not None:
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == tc.steps:
                bar.set_postfix(loss=f"{running:.3f}")
        if step + 1 in todo:
            checkpoint(step + 1)
        if callback is not None:
            callback(step + 1, params, loss_value)
    if bar is not None:
        bar.close()
    result.params = {k: v.detach() for k, v in params.items()}
    return result


def _resume(
    out_dir: Path,
    existing: list[tuple[int, Path]],
    config: TransformerConfig,
    fingerprint: dict[str, Any],
    params: dict[str, Tensor],
    opt: torch.optim.Optimizer,
    names: list[str],
    result: TrainResult,
    uniform_prefix: tuple[int, dict[str, Any]] | None = None,
) -> int:
    """Load the last checkpoint of ``existing`` into ``params``/``opt``; return its step.
    Its fingerprint must be ``fingerprint``, or ``uniform_prefix = (s, uniform fingerprint)``
    when the checkpoint is at a step ``<= s`` (the weighted run is the uniform one there)."""
    step, path = existing[-1]
    ckpt = load_checkpoint(path, expected_config=config)
    found = {k: ckpt.extra.get(k) for k in fingerprint}
    in_prefix = uniform_prefix is not None and step <= uniform_prefix[0]
    if found != fingerprint and not (in_prefix and found == uniform_prefix[1]):
        diff = [k for k in fingerprint if found[k] != fingerprint[k]]
        raise ValueError(
            f"cannot resume {out_dir}: its checkpoints were trained with different {diff} "
            f"(found {[found[k] for k in diff]}, now {[fingerprint[k] for k in diff]}); "
            "use a new run_dir or the original settings"
        )
    optim = _optim_path(path)
    if not optim.is_file():
        raise FileNotFoundError(
            f"cannot resume {out_dir} from step {step}: optimizer state {optim.name} is missing; "
            "use a new run_dir"
        )
    with torch.no_grad():
        for name, value in ckpt.params.items():
            params[name].copy_(value)
    _load_optimizer(optim, opt, names)
    log_path = out_dir / LOG_NAME
    if log_path.is_file():
        log = json.loads(log_path.read_text())
        keep = sum(1 for s in log["steps"] if s <= step)
        result.steps = log["steps"][:keep]
        result.losses = log["loss"][:keep]
        result.objectives = log["objective"][:keep]
        vkeep = sum(1 for s in log["val_steps"] if s <= step)
        result.val_steps = log["val_steps"][:vkeep]
        result.val_losses = log["val_loss"][:vkeep]
    result.checkpoints = [(s, p) for s, p in existing if s <= step]
    result.resumed_from = step
    return step


def copy_run_prefix(
    target: str | os.PathLike[str],
    source: str | os.PathLike[str],
    up_to_step: int | None = None,
) -> int | None:
    """Seed a run folder ``target`` that has no checkpoints with the checkpoints of
    ``source`` up to ``up_to_step`` (None: all), the optimizer state of the last of them and
    the training log, so that :func:`train` resumes there. Checkpoints are hard-linked when
    the file system allows (every write here replaces a file, never rewrites one), else
    copied; the folder is assembled beside ``target`` and renamed into place, so a crash
    leaves either nothing or a complete prefix. Returns the step ``target`` will resume
    from, or None when nothing was copied (``target`` holds files already, or ``source`` has
    no checkpoint up to the step or no optimizer state at the last one)."""
    target, source = Path(target), Path(source)
    if target.is_dir() and any(target.iterdir()):
        return None
    chosen = [(s, p) for s, p in list_checkpoints(source) if up_to_step is None or s <= up_to_step]
    if not chosen or not _optim_path(chosen[-1][1]).is_file():
        return None
    staging = target.with_name(f".{target.name}.{os.getpid()}.prefix")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for _, path in chosen:
        try:
            os.link(path, staging / path.name)
        except OSError:
            shutil.copyfile(path, staging / path.name)
    optim = _optim_path(chosen[-1][1])
    shutil.copyfile(optim, staging / optim.name)
    if (source / LOG_NAME).is_file():
        shutil.copyfile(source / LOG_NAME, staging / LOG_NAME)
    if target.is_dir() and any(target.iterdir()):
        shutil.rmtree(staging)  # not ours to overwrite: train from the start there
        return None
    if target.is_dir():
        target.rmdir()
    os.replace(staging, target)
    return chosen[-1][0]


def load_train_log(run_dir: str | os.PathLike[str]) -> dict[str, list]:
    """The ``train_log.json`` of a run directory."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a training run directory?")
    return json.loads(path.read_text())
