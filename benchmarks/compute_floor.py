"""Compute floor of a χ workload: bare forward/backward passes, no sampler logic.

    python benchmarks/compute_floor.py --checkpoint CKPT.safetensors --data DATA.npz \\
        --steps N [--batch-size 16] [--threads T] [--out FLOOR.json]

Times ``n_steps`` plain training passes of the attention-only transformer (full forward on a
batch of sequences, mean next-token loss, backward, gradients dropped) in a bare PyTorch
loop: no noise, no parameter update, no localization, no observables, no bookkeeping. With
``n_steps`` = the SGLD steps an estimator takes, this is the time no SGLD implementation on
the same hardware can beat by better engineering alone (only by batching passes together).

Run it through the CLI (a fresh process) when the peak RSS matters: ``ru_maxrss`` is the
high-water mark of the whole process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from patterning_core.model.transformer import AttnOnlyTransformer, TransformerConfig

__all__ = ["compute_floor"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def compute_floor(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    train_tokens: Tensor | np.ndarray,
    n_steps: int,
    batch_size: int = 16,
    *,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Time ``n_steps`` forward/backward passes on random batches of ``train_tokens``.

    Each step: ``model.loss(tokens[idx[step]]).mean().backward()`` then the gradients are
    dropped (``zero_grad(set_to_none=True)``); ``idx`` is a pre-made ``[n_steps, batch_size]``
    random index tensor, so indexing is the only data work. ``warmup`` extra steps run
    before the clock starts.

    Returns ``wall_s`` (the timed loop), ``cpu_s`` (process CPU time of the loop, the
    fairer number on a shared machine), ``steps_per_s``, ``peak_rss_mb`` (process
    high-water mark), ``n_steps``, ``batch_size``, ``threads``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    tokens = torch.as_tensor(np.asarray(train_tokens), dtype=torch.int64)
    model = AttnOnlyTransformer(config)
    model.load_params(params)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, tokens.shape[0], (n_steps + warmup, batch_size), generator=gen)

    def step(i: int) -> None:
        model.loss(tokens[idx[i]]).mean().backward()
        model.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(n_steps + i)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(n_steps):
        step(i)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": n_steps / wall,
        "peak_rss_mb": _peak_rss_mb(),
        "n_steps": n_steps,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="npz with 'train' [N, T]")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from patterning_core.model.checkpoints import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    train = np.load(args.data)["train"]
    result = compute_floor(
        ckpt.params,
        ckpt.config,
        train,
        args.steps,
        args.batch_size,
        warmup=args.warmup,
        seed=args.seed,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
