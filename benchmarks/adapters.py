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

    python benchmarks/adapters.py --workload [--repeats 1] [--threads 1] [--skip-devinterp]

The full χ workload of ``chi_workload.py`` (its trained ``bench`` model and data, 16 heads
plus the full run, 4 chains × 100 draws, batch 16, probes 8 × 64, float32) through the
three doors and devinterp 2.0.1, each in its own process as ``chi_workload.py`` measures
them, interleaved built-in → TransformerLens → plain ``loss_fn`` → devinterp per repeat,
all with seed ``s`` in repeat ``s``. ``--threads N`` cores per implementation: ours split
the chains over N one-thread worker processes, devinterp runs N torch threads (the default
2 is ``chi_workload.py``'s setting; 1 measures one core each, which on a machine shared
with other work is the least disturbed: OpenMP threads that wait for each other lose far
more to other processes than single threads do). Wall and CPU time are reported. The
table (medians; Δχ against the built-in χ of the same seed; devinterp's χ differs by its
own noise, its agreement is in ``chi_workload.md``) goes to
``benchmarks/results/adapters_workload.md`` (``adapters_workload_{N}thread.md`` for
``--threads N`` other than 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from short_workload import short_workload
from tables import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "adapters.md"
WORKLOAD_RESULTS = ROOT / "benchmarks" / "results" / "adapters_workload.md"
DOORS = {
    "built-in (TransformerLoss)": "builtin",
    "TransformerLens adapter": "transformer_lens",
    "plain loss_fn (generic vmap)": "plain",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workload", action="store_true", help="the full χ workload")
    parser.add_argument("--skip-devinterp", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="cores per implementation")
    args = parser.parse_args()
    if args.workload:
        workload(args.repeats, devinterp=not args.skip_devinterp, threads=args.threads)
        return

    from patterning_core.estimators.susceptibility import estimate_susceptibilities
    from patterning_core.model.adapters.tl import (
        TransformerLensModel,
        hooked_transformer_from_builtin,
    )
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import make_loss_fn

    torch.set_num_threads(1)
    work = short_workload(args.draws)
    cfg, params, data, probes = work.cfg, work.params, work.data, work.probes
    sampler, heads = work.sampler, work.heads
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


def workload(repeats: int, devinterp: bool = True, threads: int = 2) -> None:
    """The doors and devinterp on the full χ workload (see the module docstring)."""
    import chi_workload as cw

    ckpt, data = cw.prepare_workload()
    dev_python = None
    if devinterp:
        from devinterp_side import ensure_devinterp_venv

        dev_python = ensure_devinterp_venv(ROOT / ".bench" / "devinterp-venv")
    names = [*DOORS, *(["devinterp 2.0.1"] if dev_python else [])]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in range(repeats):
        for name, door in DOORS.items():
            out = cw.WORK / f"door-{door}-{seed}.npz"
            args = cw.ours_args(ckpt, data, out, seed, door=door, workers=threads)
            got = cw.measure(args, threads=threads)
            results[name].append(got)
            print(f"[{seed}] {name}: {float(got['wall_s']):.1f} s", flush=True)
            print(f"    cpu {float(got['cpu_s']):.1f} s", flush=True)
        if dev_python is not None:
            out = cw.WORK / f"devinterp-{seed}.npz"
            script = str(ROOT / "benchmarks" / "devinterp_side.py")
            seed_args = ["--seed", str(cw.devinterp_seed(seed)), "--threads", str(threads)]
            got = cw.measure(
                [script, "run", *cw.io_args(ckpt, data, out), *seed_args],
                python=str(dev_python),
                threads=threads,
            )
            results["devinterp 2.0.1"].append(got)
            print(f"[{seed}] devinterp 2.0.1: {float(got['wall_s']):.1f} s", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[name])

    base_name = next(iter(DOORS))
    base, base_cpu = median(base_name, "wall_s"), median(base_name, "cpu_s")
    dev = median("devinterp 2.0.1", "wall_s") if dev_python else None
    dev_cpu = median("devinterp 2.0.1", "cpu_s") if dev_python else None
    lines = [
        "# χ through the three doors and devinterp, on the benchmark workload",
        "",
        f"`python benchmarks/adapters.py {' '.join(sys.argv[1:])}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, shared with other work; torch {torch.__version__}; "
        f"{threads} core(s) per implementation: ours {threads} worker process(es) of one "
        f"thread, devinterp {threads} torch thread(s); each implementation in its own "
        f"process; median of {repeats} interleaved repeat(s), seeds 0..{repeats - 1}). "
        "CPU time: the sampling's process time, summed over our workers.",
        f"Workload: the trained `bench` model, 16 heads + the full run, sampler "
        f"{cw.SAMPLER}, probes {cw.PROBE_SEQS} × 64 tokens, float32.",
        "",
        "| path | wall time (s) | time / built-in | devinterp time / time | CPU time (s) "
        "| CPU / built-in | devinterp CPU / CPU | max abs Δχ / max abs χ vs built-in (seed 0) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = results[base_name][0]["chi"]
    for name in names:
        t, cpu = median(name, "wall_s"), median(name, "cpu_s")
        speedup = f"{dev / t:.2f}×" if dev else "—"
        cpu_speedup = f"{dev_cpu / cpu:.2f}×" if dev_cpu else "—"
        if name in DOORS:
            rel = f"{float(abs(results[name][0]['chi'] - ref).max() / abs(ref).max()):.1e}"
        else:
            rel = "— (its own noise; see chi_workload.md)"
        lines.append(
            f"| {name} | {t:.1f} | {t / base:.2f}× | {speedup} | {cpu:.1f} | "
            f"{cpu / base_cpu:.2f}× | {cpu_speedup} | {rel} |"
        )
    name = "adapters_workload.md" if threads == 2 else f"adapters_workload_{threads}thread.md"
    publish(lines, WORKLOAD_RESULTS.with_name(name))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
