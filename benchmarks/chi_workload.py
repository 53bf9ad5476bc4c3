"""χ on the fixed benchmark workload: ours, devinterp 2.0.1 and the compute floor, interleaved.

    python benchmarks/chi_workload.py [--repeats 3] [--skip-devinterp] [--scaling]

The workload (fixed so that figures compare): the ``bench`` transformer (2 layers, d_model
64, 8 heads of d_head 8, context 64, vocabulary 512, learned positions, pre-LN) trained
4,000 AdamW steps (batch 32) on synthetic sequences with planted repeated spans and
in-context bigrams, by which the induction circuit has formed; χ for all 16 heads with the
two-run estimator at ε 1e-3, nβ 30, γ 300, 4 chains, 100 draws, no burn-in, 1 step between
draws, batch 16; probes: 8 fixed validation sequences of 64 tokens (8 × 63 per-token units).

Each implementation runs in its own process (fresh peak-memory counter), all with the same
allocator settings (``ALLOCATOR_ENV``) and 2 threads (the machine's cores), in the order
ours → devinterp → floor, repeated ``--repeats`` times with seeds 0, 1, …; the table takes
the median. Agreement is judged on what remains of χ after removing its leading rank-1
component (SVD over heads × tokens), per head, against each implementation's own
seed-to-seed correlation (its noise ceiling). The table goes to stdout and to
``benchmarks/results/chi_workload.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tables import publish

from flows.runtime import ALLOCATOR_ENV  # the glibc allocator settings the project uses

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "chi_workload"
RESULTS = ROOT / "benchmarks" / "results" / "chi_workload.md"

THREADS = 2
TRAIN_STEPS = 4000
SAMPLER = {
    "step_size": 1e-3,
    "n_beta": 30.0,
    "localization": 300.0,
    "num_chains": 4,
    "num_draws": 100,
    "num_burnin": 0,
    "steps_between_draws": 1,
    "batch_size": 16,
}
SGLD_SEQS = 2048
PROBE_SEQS = 8


# ----------------------------------------------------------------------------- the workload


def prepare_workload() -> tuple[Path, Path]:
    """Train (once, resumable) the workload model; write its data. Returns (ckpt, data.npz)."""
    from patterning_core.data.synthetic import synthetic_tokens
    from patterning_core.experiments.induction.metrics import (
        best_head_score,
        prefix_matching_scores,
    )
    from patterning_core.model.checkpoints import checkpoint_path
    from patterning_core.model.training import TrainConfig, train
    from patterning_core.model.transformer import preset

    cfg = preset("bench")
    run_dir = WORK / "model"
    ckpt = checkpoint_path(run_dir, TRAIN_STEPS)
    data_path = WORK / "data.npz"
    if not ckpt.exists():
        torch.set_num_threads(THREADS)
        tokens = synthetic_tokens("bench", 20000, seed=0)
        recipe = TrainConfig(
            steps=TRAIN_STEPS,
            batch_size=32,
            lr=3e-3,
            warmup_steps=100,
            seed=0,
            checkpoint_steps=(1000, 2000, 3000, TRAIN_STEPS),
        )
        result = train(cfg, tokens, recipe, run_dir=run_dir)
        score = best_head_score(prefix_matching_scores(result.params, cfg))
        print(f"workload model: best layer-1 prefix-matching score {score:.3f}")
    if not data_path.exists():
        train_tokens = synthetic_tokens("bench", 20000, seed=0)
        pick = torch.randperm(20000, generator=torch.Generator().manual_seed(0))[:SGLD_SEQS]
        probes = synthetic_tokens("bench", 2 * PROBE_SEQS, seed=12345)
        phi = torch.randperm(SGLD_SEQS, generator=torch.Generator().manual_seed(1))[:16]
        np.savez(
            data_path,
            train=train_tokens[pick].numpy(),
            phi_batch=train_tokens[pick][phi.sort().values].numpy(),  # φ's fixed batch
            probes=probes[:PROBE_SEQS].numpy(),
            more_probes=probes.numpy(),  # for the scaling table only
        )
    return ckpt, data_path


def head_components() -> dict:
    from patterning_core.model.transformer import components, preset

    return {k: v for k, v in components(preset("bench")).items() if k.startswith("L")}


# ----------------------------------------------------------------------------- one measurement


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours_shard(ckpt: Path, data_path: Path, seed: int, dtype: str, shape: dict, chains: list):
    """One process's share of our χ: the statistics of chains ``chains``, its peak RSS and
    the CPU time of the sampling."""
    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components, make_loss_fn, param_shapes
    from patterning_core.sampling.sgld import SamplerConfig

    torch.set_num_threads(1)
    checkpoint = load_checkpoint(ckpt)
    data = np.load(data_path)
    to = torch.float64 if dtype == "float64" else torch.float32
    params = {k: v.to(to) for k, v in checkpoint.params.items()}
    config = SamplerConfig(
        **{**SAMPLER, "num_draws": shape["draws"], "num_chains": shape["chains"], "seed": seed}
    )
    door = shape.get("door", "builtin")
    if "door" in shape:
        # The canonical parameter order (a checkpoint file's is alphabetical), which the
        # HookedTransformer's follows: the flat buffer's layout, hence the noise, is then the
        # same through every door.
        params = {k: params[k] for k in param_shapes(checkpoint.config)}
    loss_fn = TransformerLoss(checkpoint.config)
    comps = components(checkpoint.config)
    if door == "plain":  # a user's own loss_fn: the generic path
        loss_fn = make_loss_fn(checkpoint.config)
    elif door == "transformer_lens":  # the same weights in a HookedTransformer
        from patterning_core.model.adapters.tl import (
            TransformerLensModel,
            hooked_transformer_from_builtin,
        )

        loss_fn = TransformerLensModel(hooked_transformer_from_builtin(params, checkpoint.config))
        params, comps = loss_fn.params(), loss_fn.components()
    elif door != "builtin":
        raise ValueError(f"unknown door {door!r}: builtin, transformer_lens or plain")
    if shape["components"] != "demo":
        prefix = "L1" if shape["components"] == "layer1" else "L"
        comps = {k: v for k, v in comps.items() if k.startswith(prefix)}
    cpu = time.process_time()
    stats = sample_susceptibility_stats(
        loss_fn,
        params,
        torch.from_numpy(data["train"]),
        torch.from_numpy(data["more_probes"][: shape["probe_seqs"]]),
        comps,
        config,
        phi_batch=torch.from_numpy(data["phi_batch"]),
        chain_ids=chains,
        progress=False,
    )
    return stats, peak_rss_mb(), time.process_time() - cpu


def ours(ckpt: Path, data_path: Path, out: Path, seed: int, dtype: str, shape: dict) -> None:
    """Our χ on the workload (run as its own process by ``measure``).

    As the pipeline runs it: the chains are split over ``THREADS`` worker processes of one
    thread each (one per core), whose statistics are merged. ``shape``: ``draws``,
    ``chains``, ``probe_seqs``, ``components`` (``"heads"``: the 16 heads; ``"layer1"``: the
    8 heads of layer 1; ``"demo"``: heads, embed and unembed), optionally ``workers`` (the
    number of one-thread worker processes, default ``THREADS``) and ``door`` (how the
    model reaches the sampler: ``"builtin"``, the default, ``TransformerLoss``;
    ``"transformer_lens"``, its weights in a ``HookedTransformer`` through the adapter;
    ``"plain"``, ``transformer.make_loss_fn``, a plain ``loss_fn``). Wall time covers start-up of
    the workers and the merge; peak memory is the sum of the workers' peaks.
    """
    from patterning_core.estimators.susceptibility import chi_from_stats, merge_stats

    chains = list(range(shape["chains"]))
    workers = shape.get("workers", THREADS)
    parts = [chains[i::workers] for i in range(workers) if chains[i::workers]]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(parts), mp_context=ctx) as pool:
        jobs = [pool.submit(_ours_shard, ckpt, data_path, seed, dtype, shape, p) for p in parts]
        results = [job.result() for job in jobs]
    chi = chi_from_stats(merge_stats([stats for stats, *_ in results]))
    wall = time.perf_counter() - start
    runs = len(chi.component) + 1  # restricted runs and the full run
    updates = SAMPLER["num_burnin"] + shape["draws"] * SAMPLER["steps_between_draws"]
    np.savez(
        out,
        chi=chi.values,
        wall_s=wall,
        peak_rss_mb=sum(rss for _, rss, _ in results),
        cpu_s=sum(cpu for *_, cpu in results),
        sgld_steps=runs * shape["chains"] * updates,
    )


def floor(ckpt: Path, data_path: Path, out: Path, n_steps: int) -> None:
    """The compute floor (run as its own process by ``measure``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compute_floor import compute_floor

    from patterning_core.model.checkpoints import load_checkpoint

    torch.set_num_threads(THREADS)
    checkpoint = load_checkpoint(ckpt)
    train_tokens = torch.from_numpy(np.load(data_path)["train"])
    got = compute_floor(checkpoint.params, checkpoint.config, train_tokens, n_steps, batch_size=16)
    np.savez(out, **got, sgld_steps=n_steps)


def measure(
    argv: list[str], python: str = sys.executable, allocator: bool = True, threads: int = THREADS
) -> dict:
    """Run one measurement in a fresh process with the benchmark's environment
    (``allocator=False``: glibc's default allocator settings; ``threads``: the OpenMP and
    MKL thread counts it starts with)."""
    out = Path(argv[argv.index("--out") + 1])
    env = {
        **{k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV},
        **(ALLOCATOR_ENV if allocator else {}),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([python, *argv], check=True, env=env, cwd=ROOT)
    with np.load(out) as got:
        return {k: got[k] for k in got.files}


# ----------------------------------------------------------------------------- agreement


def residual_after_rank1(chi: np.ndarray) -> np.ndarray:
    """χ minus its leading rank-1 component (SVD over heads × tokens)."""
    u, s, vt = np.linalg.svd(chi, full_matrices=False)
    return chi - s[0] * np.outer(u[:, 0], vt[0])


def head_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per head (row) of two ``[heads, units]`` matrices."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def agreement(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(median per-head correlation of raw χ, of χ after rank-1 removal)."""
    raw = float(np.median(head_correlations(x, y)))
    resid = float(np.median(head_correlations(residual_after_rank1(x), residual_after_rank1(y))))
    return raw, resid


# ----------------------------------------------------------------------------- the report


def devinterp_seed(seed: int) -> int:
    """devinterp's ``init_seed`` for repeat ``seed``. Its chain c is seeded with
    ``init_seed + c``, so consecutive init_seeds share 3 of 4 chains' noise: space them."""
    return 100 + 1000 * seed


def _median(rows: list[dict], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in rows))


def speed_table(results: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: wall time, steps/s, peak memory, ratios to ours."""
    ours_wall = _median(results["ours"], "wall_s")
    lines = [
        "| implementation | wall time (s) | SGLD steps | steps/s | peak RSS (MB) | time / ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        if not rows:
            continue
        wall, steps = _median(rows, "wall_s"), _median(rows, "sgld_steps")
        lines.append(
            f"| {name} | {wall:.1f} | {steps:.0f} | {steps / wall:.1f} | "
            f"{_median(rows, 'peak_rss_mb'):.0f} | {wall / ours_wall:.2f}× |"
        )
    return lines


def agreement_table(chis: dict[str, list[np.ndarray]], float64: np.ndarray | None) -> list[str]:
    """Markdown rows: per-head correlations, raw and after removing the rank-1 term."""
    pairs = []
    if len(chis["ours"]) > 1:
        pairs.append(
            ("ours seed 0 vs ours seed 1 (noise ceiling)", chis["ours"][0], chis["ours"][1])
        )
    if chis["devinterp"]:
        if len(chis["devinterp"]) > 1:
            pairs.append(
                (
                    "devinterp seed 0 vs devinterp seed 1 (noise ceiling)",
                    chis["devinterp"][0],
                    chis["devinterp"][1],
                )
            )
        for s in range(min(len(chis["ours"]), len(chis["devinterp"]))):
            pairs.append((f"ours vs devinterp, seed {s}", chis["ours"][s], chis["devinterp"][s]))
        pairs.append(
            (
                "ours vs devinterp as shipped (its φ centring), seed 0",
                chis["ours"][0],
                chis["devinterp as shipped"][0],
            )
        )
    if float64 is not None:
        pairs.append(("ours float32 vs ours float64, seed 0", chis["ours"][0], float64))
    lines = [
        "| pair | median per-head corr., raw χ | after rank-1 removal |",
        "|---|---:|---:|",
    ]
    for name, a, b in pairs:
        raw, resid = agreement(a, b)
        lines.append(f"| {name} | {raw:.3f} | {resid:.3f} |")
    return lines


DEFAULT_SHAPE = {"draws": 100, "chains": 4, "probe_seqs": PROBE_SEQS, "components": "heads"}


def io_args(ckpt: Path, data: Path, out: Path) -> list[str]:
    """The checkpoint, data and output arguments every measured command takes."""
    return ["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)]


def floor_args(ckpt: Path, data: Path, out: Path, steps: int) -> list:
    return [__file__, "_floor", *io_args(ckpt, data, out), "--steps", str(steps)]


def ours_args(ckpt: Path, data: Path, out: Path, seed: int, dtype="float32", **shape) -> list:
    shape = {**DEFAULT_SHAPE, **shape}
    return [
        __file__,
        "_ours",
        *io_args(ckpt, data, out),
        "--seed",
        str(seed),
        "--dtype",
        dtype,
        "--shape",
        json.dumps(shape),
    ]


def scaling_table(ckpt: Path, data: Path) -> list[str]:
    """Time to χ (ours) as heads, probe tokens, chains and draws grow, with peak memory."""
    cases = [
        ("demo settings: 16 heads + embed + unembed", {"components": "demo"}),
        ("8 heads (layer 1)", {"components": "layer1"}),
        ("16 heads (the workload)", {}),
        ("16 heads, 4 probe sequences (252 tokens)", {"probe_seqs": 4}),
        ("16 heads, 16 probe sequences (1008 tokens)", {"probe_seqs": 16}),
        ("16 heads, 2 chains", {"chains": 2}),
        ("16 heads, 8 chains", {"chains": 8}),
        ("16 heads, 50 draws", {"draws": 50}),
        ("16 heads, 200 draws", {"draws": 200}),
    ]
    lines = [
        "| case | wall time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for i, (label, shape) in enumerate(cases):
        got = measure(ours_args(ckpt, data, WORK / f"scaling-{i}.npz", 0, **shape))
        lines.append(f"| {label} | {float(got['wall_s']):.1f} | {float(got['peak_rss_mb']):.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-devinterp", action="store_true")
    parser.add_argument("--skip-float64", action="store_true")
    parser.add_argument("--scaling", action="store_true", help="also the scaling table")
    parser.add_argument(
        "--allocator-check",
        action="store_true",
        help="also each implementation once, glibc's default malloc",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    ckpt, data = prepare_workload()
    dev_python = None
    if not args.skip_devinterp:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from devinterp_side import ensure_devinterp_venv

        dev_python = ensure_devinterp_venv(ROOT / ".bench" / "devinterp-venv")
    results: dict[str, list[dict]] = {"ours": [], "devinterp 2.0.1": [], "compute floor": []}
    chis: dict[str, list[np.ndarray]] = {"ours": [], "devinterp": [], "devinterp as shipped": []}
    for seed in range(args.repeats):
        got = measure(ours_args(ckpt, data, WORK / f"ours-{seed}.npz", seed))
        results["ours"].append(got)
        chis["ours"].append(got["chi"])
        print(f"[{seed}] ours: {float(got['wall_s']):.1f} s", flush=True)
        if dev_python is not None:
            out = WORK / f"devinterp-{seed}.npz"
            script = str(ROOT / "benchmarks" / "devinterp_side.py")
            got = measure(
                [
                    script,
                    "run",
                    *io_args(ckpt, data, out),
                    "--seed",
                    str(devinterp_seed(seed)),
                ],
                python=str(dev_python),
            )
            results["devinterp 2.0.1"].append(got)
            chis["devinterp"].append(got["chi_phi_wstar"])
            chis["devinterp as shipped"].append(got["chi"])
            print(f"[{seed}] devinterp: {float(got['wall_s']):.1f} s", flush=True)
        steps = int(results["ours"][-1]["sgld_steps"])
        out = WORK / f"floor-{seed}.npz"
        got = measure(floor_args(ckpt, data, out, steps))
        results["compute floor"].append(got)
        print(f"[{seed}] floor: {float(got['wall_s']):.1f} s", flush=True)
    defaults = {}
    if args.allocator_check:
        defaults["ours"] = measure(
            ours_args(ckpt, data, WORK / "ours-default-malloc.npz", 0), allocator=False
        )
        if dev_python is not None:
            out = WORK / "devinterp-default-malloc.npz"
            script = str(ROOT / "benchmarks" / "devinterp_side.py")
            defaults["devinterp 2.0.1"] = measure(
                [script, "run", *io_args(ckpt, data, out), "--seed", str(devinterp_seed(0))],
                python=str(dev_python),
                allocator=False,
            )
        steps = int(results["ours"][0]["sgld_steps"])
        defaults["compute floor"] = measure(
            floor_args(ckpt, data, WORK / "floor-default-malloc.npz", steps), allocator=False
        )
    float64 = None
    if not args.skip_float64:
        float64 = measure(ours_args(ckpt, data, WORK / "ours-f64.npz", 0, "float64"))["chi"]

    report = [
        "# χ on the benchmark workload",
        "",
        f"`python benchmarks/chi_workload.py {' '.join(sys.argv[1:])}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, torch {torch.__version__}, {THREADS} threads per "
        f"implementation; median of {args.repeats} interleaved repeats, "
        f"seeds 0..{args.repeats - 1}).",
        "Allocator settings for every process: "
        + ", ".join(f"`{k}={v}`" for k, v in ALLOCATOR_ENV.items())
        + ".",
        f"Sampler: {json.dumps(SAMPLER)}; 16 heads; probes {PROBE_SEQS} × 64 tokens.",
        "",
        *speed_table(results),
        "",
        *(
            f"With glibc's default allocator settings (seed 0, one run): {name} "
            f"{float(got['wall_s']):.1f} s against {float(results[name][0]['wall_s']):.1f} s."
            for name, got in defaults.items()
        ),
        "",
        "Agreement (per-head Pearson correlation over the 504 probe tokens, median over the "
        "16 heads). devinterp's χ is read from its own draws with φ centred at L_fix(w*) as "
        "ours is (`chi_phi_wstar`, the same estimator; as shipped it centres φ at the mean "
        "loss of 32 random minibatches, which adds a per-unit term, see "
        "`benchmarks/README_devinterp.md`):",
        "",
        *agreement_table(chis, float64),
    ]
    if args.scaling:
        report += ["", "Scaling of our time to χ (one process, seed 0):", ""]
        report += scaling_table(ckpt, data)
    publish(report, args.out)


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["_ours", "_floor"])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--shape", type=json.loads, default=DEFAULT_SHAPE)
    parser.add_argument("--steps", type=int, default=0)
    args = parser.parse_args(argv)
    if args.mode == "_ours":
        ours(args.checkpoint, args.data, args.out, args.seed, args.dtype, args.shape)
    else:
        floor(args.checkpoint, args.data, args.out, args.steps)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _worker_main(sys.argv[1:])
    else:
        main()
