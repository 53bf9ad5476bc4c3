"""χ through the pipeline: 1 against 2 Dask workers, and a fully cached rerun.

    python benchmarks/pipeline_scaling.py [--draws 100]

Runs the ``susceptibilities`` flow (local Prefect server, local Dask cluster) on the
benchmark workload's checkpoint (``chi_workload.py``; the ``bench`` architecture, which is
also the ``demo`` preset's) at the demo's sampler settings, with every component of the
demo (16 heads, embedding, unembedding; 4 chains → 20 shards), into a fresh store with
1 worker, then into another fresh store with 2 workers, then once more into the 2-worker
store (every shard complete: no sampling). Each worker is a process with one thread.
Times are whole flow calls (cluster start-up included). Prints a table and writes it to
``benchmarks/results/pipeline_scaling.md``.

Model for more workers: shards are independent and similar in size within a kind
(a head-group shard of layer 0 costs about twice one of layer 1; the full run, embedding
and unembedding shards are smaller), so k workers approach k× until the number of shards
per worker gets small (20 shards per checkpoint here) or the slowest shard dominates.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from chi_workload import SAMPLER, TRAIN_STEPS, WORK, prepare_workload  # noqa: E402
from tables import publish  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline_scaling.md"


def run_flow(store: Path, ckpt: Path, draws: int, workers: int) -> tuple[float, dict]:
    from flows.parameters import SusceptibilityParameters
    from flows.susceptibilities import susceptibilities

    workload = {
        "kind": "transformer",
        "data": {"source": "synthetic", "preset": "bench", "n_seqs": 20000, "seed": 0},
        "sgld_seqs": 1024,
        "probe_seqs": 8,
    }
    sampler = {**SAMPLER, "num_draws": draws, "seed": 0}
    start = time.perf_counter()
    summary = susceptibilities(
        SusceptibilityParameters(
            store=str(store),
            workload=workload,
            checkpoints=[{"step": TRAIN_STEPS, "path": str(ckpt)}],
            sampler=sampler,
            n_workers=workers,
        )
    )
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=SAMPLER["num_draws"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from flows.server import prefect_api

    ckpt, _ = prepare_workload()
    stores = WORK / "scaling"
    shutil.rmtree(stores, ignore_errors=True)
    rows = []
    with prefect_api():
        for label, workers, store in (
            ("cold, 1 worker", 1, stores / "w1.zarr"),
            ("cold, 2 workers", 2, stores / "w2.zarr"),
            ("rerun, all shards complete", 2, stores / "w2.zarr"),
        ):
            seconds, summary = run_flow(store, ckpt, args.draws, workers)
            rows.append((label, seconds, summary["computed"], summary["already_complete"]))
            print(f"{label}: {seconds:.1f} s", flush=True)
    one, two, rerun = (r[1] for r in rows)
    lines = [
        "# χ through the pipeline: scaling over Dask workers, cached rerun",
        "",
        f"`python benchmarks/pipeline_scaling.py --draws {args.draws}` on {platform.node()} "
        f"({os.cpu_count()} CPUs); demo sampler settings, 16 heads + embed + unembed, "
        "4 chains (20 shards), one thread per worker.",
        "",
        "| run | wall time (s) | shards computed | shards already complete |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {s:.1f} | {c} | {d} |" for label, s, c, d in rows),
        "",
        f"Speed-up with 2 workers: {one / two:.2f}× (target ≥ 1.6×); cached rerun: "
        f"{rerun / one:.1%} of the cold 1-worker run (target ≤ 10 %).",
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
