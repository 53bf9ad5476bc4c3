"""SGLD throughput: chains one after another against chains vectorized together.

    python benchmarks/sampling.py [--chains 8] [--steps 300] [--repeats 3] [--threads 1]

Prints a table and writes it to ``benchmarks/results/sampling.md``. Each row times the same
total work (chains × steps SGLD updates, with a draw recorded after every update) done
as ``chains`` separate single-chain runs, then as one vectorized run; the median of
``repeats`` interleaved repetitions is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tables import publish

from patterning_core.data.synthetic import synthetic_tokens
from patterning_core.estimators.llc import estimate_llc
from patterning_core.model.transformer import init_params, make_loss_fn, preset
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.toys.models import make_mlp_regression

RESULTS = Path(__file__).parent / "results" / "sampling.md"


def workloads() -> dict[str, tuple[Callable, dict, tuple, SamplerConfig]]:
    """name -> (loss_fn, params, data, config with num_chains to be set)."""
    out = {}
    loss_fn, params, data = make_mlp_regression(n=2048, d_in=16, hidden=64)
    out["MLP 16-64-1, batch 64"] = (
        loss_fn,
        params,
        data,
        SamplerConfig(step_size=1e-4, n_beta=50.0, localization=100.0, batch_size=64),
    )
    cfg = preset("bench")
    out["attention-only transformer (bench), batch 16"] = (
        make_loss_fn(cfg),
        init_params(cfg, seed=0),
        (synthetic_tokens("bench", 512, seed=0),),
        SamplerConfig(step_size=1e-3, n_beta=30.0, localization=300.0, batch_size=16),
    )
    return out


def time_run(loss_fn, params, data, config: SamplerConfig, chains: int, vectorized: bool) -> float:
    start = time.perf_counter()
    if vectorized:
        estimate_llc(
            loss_fn, params, data, config.replace(num_chains=chains), progress=False, init_loss=0.0
        )
    else:
        for c in range(chains):
            estimate_llc(
                loss_fn,
                params,
                data,
                config.replace(num_chains=1, seed=c),
                progress=False,
                init_loss=0.0,
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name, (loss_fn, params, data, config) in workloads().items():
        config = config.replace(num_draws=args.steps, num_burnin=0)
        time_run(loss_fn, params, data, config.replace(num_draws=10), 2, True)  # warm-up
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for vectorized in (False, True):
                times[vectorized].append(
                    time_run(loss_fn, params, data, config, args.chains, vectorized)
                )
        total_steps = args.chains * args.steps
        seq, vec = statistics.median(times[False]), statistics.median(times[True])
        rows.append((name, total_steps / seq, total_steps / vec, seq / vec))

    header = (
        f"SGLD steps per second (chain-steps/s), {args.chains} chains × {args.steps} steps, "
        f"median of {args.repeats}; torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    lines = [
        header,
        "",
        "| workload | sequential chains | vectorized chains | speed-up |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {n} | {s:,.0f} | {v:,.0f} | {r:.1f}× |" for n, s, v, r in rows]
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
