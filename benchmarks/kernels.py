"""Kernel and allocator choices behind our χ step, measured on one core.

    python benchmarks/kernels.py

1. Readout (unembedding + per-token cross-entropy, forward + backward, 8 lanes × 16
   sequences × 63 tokens, d_model 64, vocabulary 512): our fused chunked kernel
   (``fused_loss.linear_cross_entropy``) against ``torch.compile`` of the plain expression
   (inductor, compile time reported apart) and the plain eager expression.
2. Attention (forward + backward, [128 sequences, 8 heads, 64 tokens, d_head 8], causal):
   the fused SDPA kernel against batched matmuls + softmax and SDPA's math backend.
3. Allocator: ms per SGLD lane-step of the 8 layer-1 heads of the benchmark workload
   (``chi_workload.py``'s model; one chain, 40 draws) in a fresh process under glibc's
   defaults, Dask's pre-spawn ``MALLOC_TRIM_THRESHOLD_=65536`` and the project's settings
   (``flows.runtime.ALLOCATOR_ENV``).

Best of 3 repeats for 1 and 2. Prints a table and writes it to
``benchmarks/results/kernels.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tables import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "kernels.md"


def best_ms(fn, reps: int = 10) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1000 * best


def readout_rows() -> list[str]:
    from patterning_core.model.fused_loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(0)
    n, d, v = 8 * 16 * 63, 64, 512
    x = torch.randn(n, d, generator=gen, requires_grad=True)
    W, b = 0.1 * torch.randn(d, v, generator=gen), 0.1 * torch.randn(v, generator=gen)
    t = torch.randint(0, v, (n,), generator=gen)

    def plain(x, W, b, t):
        return F.cross_entropy(x @ W + b, t, reduction="none")

    start = time.perf_counter()
    compiled = torch.compile(plain, dynamic=False)
    torch.autograd.grad(compiled(x, W, b, t).sum(), x)
    compile_s = time.perf_counter() - start
    rows = []
    for name, fn in [
        ("fused chunked kernel (ours)", linear_cross_entropy),
        (f"torch.compile (compiled in {compile_s:.0f} s)", compiled),
        ("plain eager", plain),
    ]:
        ms = best_ms(lambda fn=fn: torch.autograd.grad(fn(x, W, b, t).sum(), x))
        rows.append(f"| readout | {name} | {ms:.1f} |")
    return rows


def attention_rows() -> list[str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(0)
    B, H, T, d = 128, 8, 64, 8
    q, k, v = (torch.randn(B, H, T, d, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.full((T, T), float("-inf")).triu(1)

    def fused():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def matmuls():
        return torch.softmax(q @ k.transpose(-1, -2) * d**-0.5 + mask, -1) @ v

    def math_backend():
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    rows = []
    for name, fn in [
        ("fused SDPA (ours)", fused),
        ("batched matmuls + softmax", matmuls),
        ("SDPA math backend", math_backend),
    ]:
        ms = best_ms(lambda fn=fn: torch.autograd.grad(fn().sum(), (q, k, v)))
        rows.append(f"| attention | {name} | {ms:.1f} |")
    return rows


def lane_step_ms(draws: int = 40) -> float:
    """ms per lane-step of the 8 layer-1 heads, one chain (run in a fresh process)."""
    import numpy as np
    from chi_workload import SAMPLER, prepare_workload

    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components
    from patterning_core.sampling.sgld import SamplerConfig

    torch.set_num_threads(1)
    ckpt_path, data_path = prepare_workload()
    ckpt, data = load_checkpoint(ckpt_path), np.load(data_path)
    config = SamplerConfig(**{**SAMPLER, "num_draws": draws, "seed": 0})
    names = [c for c in components(ckpt.config) if c.startswith("L1")]
    start = time.perf_counter()
    sample_susceptibility_stats(
        TransformerLoss(ckpt.config),
        ckpt.params,
        torch.from_numpy(data["train"]),
        torch.from_numpy(data["probes"]),
        components(ckpt.config),
        config,
        component_names=names,
        include_full=False,
        phi_batch=torch.from_numpy(data["phi_batch"]),
        chain_ids=[0],
        progress=False,
    )
    return 1000 * (time.perf_counter() - start) / (len(names) * (draws + 1))


def allocator_rows() -> list[str]:
    from flows.runtime import ALLOCATOR_ENV

    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    settings = [
        ("glibc defaults", base),
        (
            "Dask's pre-spawn MALLOC_TRIM_THRESHOLD_=65536",
            {**base, "MALLOC_TRIM_THRESHOLD_": "65536"},
        ),
        ("the project's ALLOCATOR_ENV", {**base, **ALLOCATOR_ENV}),
    ]
    rows = []
    for name, env in settings:
        out = subprocess.run(
            [sys.executable, __file__, "--lane-step"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(
            f"| SGLD lane-step, layer-1 heads | {name} | {float(out.stdout.split()[-1]):.1f} |"
        )
    return rows


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if "--lane-step" in sys.argv:
        print(lane_step_ms())
        return
    torch.set_num_threads(1)
    rows = [*readout_rows(), *attention_rows(), *allocator_rows()]
    lines = [
        "# Kernel and allocator choices (one core)",
        "",
        f"`python benchmarks/kernels.py` on {platform.node()} ({os.cpu_count()} CPUs), "
        f"torch {torch.__version__}; forward + backward, best of 3.",
        "",
        "| what | variant | ms |",
        "|---|---|---:|",
        *rows,
    ]
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
