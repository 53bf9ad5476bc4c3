"""How fast can a sampler that cannot see inside ``loss_fn`` be? Arithmetic, not wall time.

    python benchmarks/opaque_bound.py [--floor-s 57.9] [--devinterp-s 150.1] [--repeats 3]

Counts the matrix-multiply FLOPs (``torch.utils.flop_counter.FlopCounterMode``: mm, bmm,
addmm, attention kernels; elementwise work is not counted, so every number is a lower
bound on the work) of the χ workload's sampling through the generic path (a plain
``loss_fn``, ``GroupedLaneForward``), per SGLD draw and per group of runs, against one bare
forward/backward pass of the same model on a batch of 16 (the pass the compute floor of
``chi_workload.py`` times 6,800 times). FLOP counts do not depend on the machine or its load,
which is why this check is arithmetic.

The generic path already skips what an opaque ``loss_fn`` lets it skip (under ``vmap`` the
layers below a group's parameters are computed once per chain, and autograd records nothing
below them); what is left per lane is every op that depends on the moving parameters, for
the step (forward and backward) and for the evaluation at the draw (the φ batch and the
probes, forward only), which the estimator needs at every draw and devinterp computes too.

The bound: if the opaque path ran at the bare loop's FLOP rate (the loop uses the built-in
model's fused kernels, so this is generous), its time would be R × the floor's time, with R
its FLOPs over the floor's. ``--floor-s`` and ``--devinterp-s`` are the floor's and
devinterp's wall times measured in one run of ``chi_workload.py`` (defaults: the README's
table). The workload's shapes come from ``short_workload.py`` (the ``bench`` shape, 16 heads
and the full run, 4 chains, batch 16, probes 8 × 64); the weights do not change the count.

The second table is the part that is measured in time: the FLOP rate (FLOPs per second of
process CPU time, one thread, median of ``--repeats`` interleaved repeats) of the generic
path on the same shapes (10 draws, every group) against that of bare forward/backward
passes of the same plain ``loss_fn`` and of the built-in model (the compute floor's loop).
Their ratio is the most engineering that keeps ``loss_fn`` opaque can still gain: to run
the same arithmetic as fast as a loop that does nothing else.
The tables go to ``benchmarks/results/opaque_bound.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from short_workload import short_workload
from tables import publish
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "opaque_bound.md"
CHAINS = 4


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_draw(names: list[str], include_full: bool) -> int:
    """FLOPs of one more draw (one SGLD step with gradients plus one evaluation) of the
    generic path for the runs ``names`` (+ the full run), from 3 draws minus 2."""
    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.transformer import make_loss_fn

    def run(draws: int) -> int:
        work = short_workload(draws)
        loss_fn = make_loss_fn(work.cfg)
        return _flops(
            lambda: sample_susceptibility_stats(
                loss_fn,
                work.params,
                work.data,
                work.probes,
                work.heads,
                work.sampler,
                component_names=names,
                include_full=include_full,
                progress=False,
            )
        )

    return run(3) - run(2)


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def rates(repeats: int, draws: int = 10, passes: int = 200) -> dict[str, float]:
    """GFLOP per CPU second (one thread, median over interleaved repeats) of the generic path
    (``draws`` draws, 16 heads and the full run) and of ``passes`` bare forward/backward
    passes of the plain ``loss_fn`` and of the built-in model, on batches of 16."""
    from compute_floor import compute_floor

    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.transformer import make_loss_fn

    work = short_workload(draws)
    loss_fn = make_loss_fn(work.cfg)
    size = work.sampler.batch_size
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, work.data.shape[0], (passes, size), generator=gen)
    batches = [work.data[r] for r in rows]  # random batches, as the compute floor draws them
    params = {k: v.clone().requires_grad_(True) for k, v in work.params.items()}

    def generic() -> None:
        sample_susceptibility_stats(
            loss_fn, work.params, work.data, work.probes, work.heads, work.sampler, progress=False
        )

    def plain() -> None:
        for tokens in batches:
            loss_fn(params, (tokens,)).mean().backward()
            for p in params.values():
                p.grad = None

    def builtin_cpu_seconds() -> float:  # the compute floor's own loop (it warms up itself)
        return compute_floor(work.params, work.cfg, work.data, passes, size)["cpu_s"]

    # The built-in model does the same arithmetic as the plain one, partly in kernels the
    # counter does not see (the fused readout), so the plain count stands for both.
    plain_flops = _flops(plain)
    work_flops = {"generic": _flops(generic), "plain": plain_flops, "builtin": plain_flops}
    plain()  # warm-up
    seconds: dict[str, list[float]] = {k: [] for k in work_flops}
    for _ in range(repeats):
        seconds["generic"].append(_cpu_seconds(generic))
        seconds["plain"].append(_cpu_seconds(plain))
        seconds["builtin"].append(builtin_cpu_seconds())
    return {k: work_flops[k] / 1e9 / statistics.median(v) for k, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor-s", type=float, default=57.9)
    parser.add_argument("--devinterp-s", type=float, default=150.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from patterning_core.model.transformer import make_loss_fn

    torch.set_num_threads(1)
    work = short_workload(2)
    assert work.sampler.num_chains == CHAINS, work.sampler.num_chains
    loss_fn = make_loss_fn(work.cfg)
    params = {k: v.clone().requires_grad_(True) for k, v in work.params.items()}
    batch = (work.data[: work.sampler.batch_size],)
    floor_pass = _flops(lambda: loss_fn(params, batch).mean().backward())

    layer = {n: int(n[1]) for n in work.heads}
    groups = [
        ("heads of layer 0", [n for n in work.heads if layer[n] == 0], False),
        ("heads of layer 1", [n for n in work.heads if layer[n] == 1], False),
        ("full run", [], True),
    ]
    lines = [
        "# The generic path's arithmetic against the compute floor's",
        "",
        "`python benchmarks/opaque_bound.py "
        f"--floor-s {args.floor_s} --devinterp-s {args.devinterp_s}` (see its docstring). "
        "Matrix-multiply FLOPs per SGLD draw (one step with gradients and one evaluation of "
        f"the φ batch and the probes), `bench` shape, {CHAINS} chains, batch "
        f"{work.sampler.batch_size}, probes {tuple(work.probes.shape)}; the floor's pass: one "
        f"forward/backward on a batch of {work.sampler.batch_size}, "
        f"{floor_pass / 1e6:.1f} MFLOP.",
        "",
        "| runs | lanes | GFLOP per draw | per lane, in floor passes |",
        "|---|---:|---:|---:|",
    ]
    total, lanes_total = 0, 0
    for label, names, full in groups:
        got = flops_per_draw(names, full)
        lanes = (len(names) + int(full)) * CHAINS
        total, lanes_total = total + got, lanes_total + lanes
        lines.append(f"| {label} | {lanes} | {got / 1e9:.2f} | {got / lanes / floor_pass:.2f} |")
        print(lines[-1], flush=True)
    ratio = total / (lanes_total * floor_pass)
    lines.append(f"| all | {lanes_total} | {total / 1e9:.2f} | {ratio:.2f} |")
    bound = ratio * args.floor_s
    target = args.devinterp_s / 3
    lines += [
        "",
        f"R = {ratio:.2f}: the generic path does {ratio:.2f}× the floor's arithmetic per "
        f"lane. At the bare loop's FLOP rate it would take {ratio:.2f} × {args.floor_s:.1f} s "
        f"= {bound:.1f} s; 3× faster than devinterp ({args.devinterp_s:.1f} s) is "
        f"{target:.1f} s, which would need {bound / target:.2f}× the bare loop's FLOP rate "
        "(a loop that does nothing but these passes, with the built-in model's fused kernels).",
    ]
    got = rates(args.repeats)
    headroom = got["plain"] / got["generic"]
    lines += [
        "",
        f"FLOP rate, GFLOP per CPU second, one thread, median of {args.repeats}:",
        "",
        "| work | GFLOP/s |",
        "|---|---:|",
        f"| generic path, 10 draws, 16 heads and the full run | {got['generic']:.1f} |",
        f"| bare passes of the same plain `loss_fn` | {got['plain']:.1f} |",
        f"| bare passes of the built-in model (the compute floor's loop) | {got['builtin']:.1f} |",
        "",
        f"The generic path runs its arithmetic at {1 / headroom:.2f}× the rate of bare passes "
        f"of the same `loss_fn`: an opaque path made as lean as a loop that does nothing but "
        f"passes would be at most {headroom:.2f}× faster than it is.",
    ]
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
