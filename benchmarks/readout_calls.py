"""Torch calls per SGLD draw of the outline χ workload, with the readout loss chunked as on
the CPU and as off it (one chunk per call).

    python benchmarks/readout_calls.py [--chains 8]

On a GPU each torch call is a kernel launch and some Python, so a small model's χ is
launch-bound; the count is taken here on the CPU, with the compiled CPU kernels off (as a GPU
runs the readout), by the profiler: ``sample_susceptibility_stats`` (all 16 heads, the
embedding, the unembedding and the full run; ``demo_long`` at its seed-0 initialization; the
outline workload's 256 SGLD sequences and 9 probe sequences) at 2 and 4 draws, the difference
halved. The table goes to ``benchmarks/results/readout_calls.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ["PATTERNING_CPU_KERNELS"] = "0"  # before the kernels are first looked up

import torch
from tables import publish
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "readout_calls.md"
WORKLOAD = {
    "kind": "transformer",
    "data": {"source": "corpus", "whitespace": "split", "outline": 0.2},
    "sgld_seqs": 256,
    "probe_seqs": 1,
    "probe_outline": 8,
}


def calls(work, sampler, draws: int) -> int:
    from patterning_core.estimators.susceptibility import sample_susceptibility_stats

    config = sampler.replace(num_draws=draws)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sample_susceptibility_stats(
            work.loss_fn,
            work.params,
            work.data,
            work.probes,
            work.components,
            config,
            progress=False,
        )
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8)
    args = parser.parse_args()

    from patterning_core.model import fused_loss
    from patterning_core.model.checkpoints import save_checkpoint
    from patterning_core.model.transformer import init_params, preset
    from patterning_core.recipes import demo_sampler
    from patterning_core.sampling.config import SamplerConfig
    from patterning_core.store.workloads import build_workload

    torch.set_num_threads(2)
    config = preset("demo_long")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "init.safetensors"
        save_checkpoint(ckpt, init_params(config, 0), config, 0, 0)
        work = build_workload(WORKLOAD, ckpt)
    # the outline χ configs: the demo sampler with batch 4
    sampler = SamplerConfig.from_dict(
        {**demo_sampler(), "num_chains": args.chains, "batch_size": 4}
    )
    lines = [
        f"Torch calls per SGLD draw, outline χ workload (`demo_long`, {args.chains} chains, "
        "5 run groups, compiled CPU kernels off), counted by the profiler on the CPU:",
        "",
        "| readout loss chunks | rows per chunk | torch calls per draw |",
        "|---|---:|---:|",
    ]
    cpu_rows = fused_loss.CHUNK_ROWS
    one_chunk = fused_loss.ACCELERATOR_CHUNK_ELEMENTS // config.d_vocab
    for label, rows in (("the CPU's", cpu_rows), ("off the CPU (one per call)", one_chunk)):
        fused_loss.CHUNK_ROWS = rows  # the CPU takes CHUNK_ROWS; set it to what a GPU takes
        per_draw = (calls(work, sampler, 4) - calls(work, sampler, 2)) / 2
        lines.append(f"| {label} | {rows} | {per_draw:,.0f} |")
    fused_loss.CHUNK_ROWS = cpu_rows
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
