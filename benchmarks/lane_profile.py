"""Where the sampler's time goes, per group of runs and per phase, for each lane forward.

    python benchmarks/lane_profile.py [--draws 10] [--forwards builtin,vmap,grouped]

The short cut of ``adapters.py`` (the ``bench`` shape at a seeded initialization, 16 heads
and the full run, 4 chains, ``--draws`` draws, batch 16, the 24-sequence evaluation batch
of χ, float32, one thread), run with ``run_sgld`` once per group of runs as
``estimate_susceptibilities`` groups them (the 8 heads of layer 0, of layer 1, the full
run), with the lane forward

- ``builtin``: ``TransformerLoss``'s own (the restricted-head fast path);
- ``vmap``: ``VmapLaneForward`` of the plain ``loss_fn`` (every moving parameter batched
  over all lanes; the generic path before ``GroupedLaneForward``);
- ``grouped``: ``GroupedLaneForward`` of the plain ``loss_fn`` (the generic path).

Process CPU time per phase: the forward of the SGLD step (with gradients), the evaluation
at draws, and the rest (backward and update). The table goes to
``benchmarks/results/lane_profile.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from short_workload import short_workload
from tables import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lane_profile.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--forwards", default="builtin,vmap,grouped")
    args = parser.parse_args()

    from patterning_core.estimators.susceptibility import group_components
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import make_loss_fn
    from patterning_core.sampling import sgld

    torch.set_num_threads(1)
    work = short_workload(args.draws)
    cfg, params, data, probes = work.cfg, work.params, work.data, work.probes
    eval_batch = (torch.cat([data[:16], probes]),)
    config, heads = work.sampler, work.heads
    groups = [[sgld.Run(n, heads[n]) for n in g] for g in group_components(heads, None, 4)]
    groups.append([sgld.full_run(params)])
    labels = ["heads of layer 0", "heads of layer 1", "full run"]
    plain = make_loss_fn(cfg)
    real_make = sgld.make_lane_forward

    lines = [
        f"CPU time (s) of `run_sgld` per group and phase, `bench` shape at initialization, "
        f"4 chains × {args.draws} draws, batch 16, evaluation batch 24 × 64, float32, "
        "1 thread:",
        "",
        "| lane forward | group | step forward | evaluation at draws | backward + update | total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in args.forwards.split(","):
        totals = 0.0
        for label, runs in zip(labels, groups, strict=True):
            spent: dict[str, float] = defaultdict(float)

            def timed(loss_fn, w_star, runs, num_chains, name=name, spent=spent):
                if name == "builtin":
                    forward = real_make(loss_fn, w_star, runs, num_chains)
                elif name == "vmap":
                    forward = sgld.VmapLaneForward(loss_fn, w_star)
                else:
                    forward = sgld.GroupedLaneForward(loss_fn, w_star, runs, num_chains)

                def call(views, batch, chain_of_lane):
                    phase = "step" if chain_of_lane is not None else "eval"
                    start = time.process_time()
                    out = forward(views, batch, chain_of_lane)
                    spent[phase] += time.process_time() - start
                    return out

                return call

            sgld.make_lane_forward = timed
            loss_fn = TransformerLoss(cfg) if name == "builtin" else plain
            start = time.process_time()
            sgld.run_sgld(
                loss_fn,
                params,
                (data,),
                runs,
                config,
                on_draw=lambda ctx: ctx.evaluate(eval_batch),
                progress=False,
            )
            total = time.process_time() - start
            sgld.make_lane_forward = real_make
            totals += total
            rest = total - spent["step"] - spent["eval"]
            lines.append(
                f"| {name} | {label} | {spent['step']:.2f} | {spent['eval']:.2f} | "
                f"{rest:.2f} | {total:.2f} |"
            )
        lines.append(f"| {name} | **all** | | | | **{totals:.2f}** |")
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
