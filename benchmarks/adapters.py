"""χ of one model through three doors: the built-in path, the TransformerLens adapter, and a
plain ``loss_fn`` (the generic vmapped path), interleaved in one process on one thread.

    python benchmarks/adapters.py [--draws 10] [--repeats 3]

A short cut of the fixed χ workload (``chi_workload.py``): the ``bench`` transformer's
shape (2 layers × 8 heads, d_model 64, d_head 8, context 64, vocabulary 512) at a seeded
initialization (speed does not depend on training), χ of all 16 heads plus the full run,
ε 1e-3, nβ 30, γ 300, 4 chains, ``--draws`` draws, batch 16, probes 8 × 64 tokens, float32,
one torch thread. The TransformerLens model is the built-in one's weights in a
``HookedTransformer`` (``hooked_transformer_from_builtin``): the same function, so its χ
is checked against the built-in χ (max |Δχ| / max |χ|, float32 rounding only). The plain
``loss_fn`` is ``transformer.make_loss_fn``: what a user who writes their own loss gets.
Median over ``--repeats``; the table goes to ``benchmarks/results/adapters.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from tables import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "adapters.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from patterning_core.estimators.susceptibility import estimate_susceptibilities
    from patterning_core.model.adapters.tl import (
        TransformerLensModel,
        hooked_transformer_from_builtin,
    )
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components, init_params, make_loss_fn, preset
    from patterning_core.sampling.sgld import SamplerConfig

    torch.set_num_threads(1)
    cfg = preset("bench")
    params = init_params(cfg, 0)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.d_vocab, (2048, cfg.n_ctx), generator=gen)
    probes = torch.randint(0, cfg.d_vocab, (8, cfg.n_ctx), generator=gen)
    sampler = SamplerConfig(
        step_size=1e-3,
        n_beta=30.0,
        localization=300.0,
        num_chains=4,
        num_draws=args.draws,
        batch_size=16,
    )
    heads = {k: v for k, v in components(cfg).items() if k.startswith("L")}
    adapter = TransformerLensModel(hooked_transformer_from_builtin(params, cfg))
    tl_params = adapter.params()
    tl_heads = {k: v for k, v in adapter.components().items() if k.startswith("L")}
    doors = {
        "built-in (TransformerLoss)": lambda: estimate_susceptibilities(
            TransformerLoss(cfg), params, data, probes, heads, sampler
        ),
        "TransformerLens adapter": lambda: estimate_susceptibilities(
            adapter, tl_params, data, probes, tl_heads, sampler
        ),
        "plain loss_fn (generic vmap)": lambda: estimate_susceptibilities(
            make_loss_fn(cfg), params, data, probes, heads, sampler
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in doors}
    chis = {}
    for _ in range(args.repeats):
        for name, run in doors.items():
            start = time.perf_counter()
            chis[name] = run()
            times[name].append(time.perf_counter() - start)
    base_name = next(iter(doors))
    base = statistics.median(times[base_name])
    ref = chis[base_name].values
    scale = float(abs(ref).max())
    lines = [
        f"χ of the `bench` shape, 16 heads + full run, 4 chains × {args.draws} draws, batch 16, "
        f"probes 8 × 64, float32, 1 thread; median of {args.repeats}:",
        "",
        "| path | wall time | time / built-in | max abs Δχ / max abs χ vs built-in |",
        "|---|---:|---:|---:|",
    ]
    for name in doors:
        t = statistics.median(times[name])
        rel = float(abs(chis[name].values - ref).max()) / scale
        lines.append(f"| {name} | {t:.1f} s | {t / base:.2f}× | {rel:.1e} |")
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
