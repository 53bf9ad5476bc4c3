"""The ``spacing`` flow: weighting along the χ mode of the heads that predict whitespace
(the whitespace experiment of demonstration 1, method.md §7).

1. The reference baseline (seed ``seeds[0]``) trains on the data (default: the corpus
   alone), memoized like the pipeline's runs.
2. χ of its 16 heads at ``chi_step`` through the ``susceptibilities`` flow (sharded over
   Dask, cached and resumable in ``<out>/chi.zarr``).
3. Spacing scores of the heads at the reference's last checkpoint; the spacing mode (the χ
   mode whose unit loadings correlate most with whitespace targets); Amplify / Suppress
   weights along it, extrapolated by spacing class (``tasks/spacing.py``).
4. Baseline, Amplify and Suppress retrained for every seed from the same initialization and
   data order (memoized run folders keyed on the weights' digest: a rerun trains nothing).
5. Loss on whitespace and other targets, spacing scores, report (Markdown, PNG, artifact).

    patterning spacing --seeds 0 1 2        # ≈ 8 min on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.induction_patterning import (
    DEFAULT_SEEDS,
    add_output_and_workers,
    check_seeds_and_alpha,
    print_run_table,
    retrain_all,
    training_jobs,
)
from flows.runtime import make_task_runner
from flows.susceptibilities import susceptibilities
from patterning_core.model.transformer import components
from patterning_core.sampling.config import ConfigError, SamplerConfig
from patterning_core.workspace import patterning_home, settings_digest
from tasks.retraining import retrain_weighted
from tasks.spacing import CONDITION_OF, spacing_measures, spacing_weights, write_spacing_report
from tasks.training import check_training_inputs, model_preset, train_model

SPACING_DATA = {"source": "corpus"}
SPACING_TRAIN = {
    "steps": 3000,
    "batch_size": 32,
    "lr": 3e-3,
    "warmup_steps": 100,
    "seed": 0,
    "checkpoint_steps": list(range(0, 3001, 250)),
    "fused": True,
}


def check_spacing_parameters(
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    seeds: list[int] | None = None,
    chi_step: int = 1000,
    alpha: float = 1.0,
    sampler: dict | None = None,
    eval_seqs: int = 256,
    **_runtime: object,
) -> tuple[dict, dict, list[int], dict]:
    """Validate before anything is trained; returns the resolved ``(data, train, seeds,
    sampler)``. A bad parameter is a ``ConfigError`` naming it and the fix."""
    data = dict(data or SPACING_DATA)
    train = dict(train or SPACING_TRAIN)
    tc = check_training_inputs(preset, data, train)
    seeds = check_seeds_and_alpha(seeds, alpha)
    if chi_step not in tc.schedule():
        raise ConfigError(
            f"chi_step {chi_step} is not a checkpoint of the recipe ({tc.schedule()}); pick "
            "one of them or add it to train.checkpoint_steps."
        )
    if isinstance(eval_seqs, bool) or not isinstance(eval_seqs, int) or eval_seqs < 1:
        raise ConfigError(f"eval_seqs must be an integer >= 1, got {eval_seqs!r}.")
    sampler = SamplerConfig.from_dict(sampler or SamplerConfig().to_dict()).to_dict()
    return data, train, seeds, sampler


@flow(name="spacing")
def spacing(
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    seeds: list[int] | None = None,
    chi_step: int = 1000,
    alpha: float = 1.0,
    sampler: dict | None = None,
    sgld_seqs: int = 2048,
    probe_seqs: int = 8,
    eval_seqs: int = 256,
    out_dir: str | None = None,
    runs_root: str | None = None,
    dask_address: str | None = None,
    n_workers: int = 2,
    threads: int = 1,
) -> dict:
    """Run the spacing experiment (module docstring); returns ``{"report", "out_dir",
    "rows", "trained_steps", "chi_shards_computed", "mode"}``.

    Args:
        preset, data, train: model, data spec (default ``SPACING_DATA``: the corpus alone)
            and recipe (default ``SPACING_TRAIN``); ``seed`` is set per run.
        seeds: seeds of the baseline, Amplify and Suppress runs; the first one's baseline is
            the reference (spacing scores, χ).
        chi_step: checkpoint of the reference at which χ is estimated.
        alpha: magnitude of the weighting (``induction_patterning.ALPHA_RULE``).
        sampler: ``SamplerConfig`` fields (default: the demo's settings).
        sgld_seqs, probe_seqs: SGLD data and probe sequences of the χ workload.
        eval_seqs: validation sequences for losses and spacing scores.
        out_dir: report and χ store (default ``$PATTERNING_HOME/spacing/<key>``).
        runs_root: training runs (default ``$PATTERNING_HOME/runs``).
        dask_address, n_workers, threads: χ shards and training runs go to a Dask cluster
            (``n_workers`` local processes, or ``dask_address``).
    """
    started = time.perf_counter()
    data, train, seeds, sampler = check_spacing_parameters(
        preset, data, train, seeds, chi_step, alpha, sampler, eval_seqs
    )
    logger = get_run_logger()
    home = patterning_home()
    runs_root = runs_root or str(home / "runs")
    settings = {
        "preset": preset,
        "data": data,
        "train": train,
        "seeds": seeds,
        "chi_step": chi_step,
        "alpha": alpha,
        "sampler": sampler,
        "sgld_seqs": sgld_seqs,
        "probe_seqs": probe_seqs,
        "eval_seqs": eval_seqs,
    }
    key = settings_digest(settings)
    out = Path(out_dir) if out_dir else home / "spacing" / key
    out.mkdir(parents=True, exist_ok=True)

    reference = train_model(preset, data, {**train, "seed": seeds[0]}, runs_root, threads)
    ckpt = next(c for c in reference["checkpoints"] if c["step"] == chi_step)
    heads = [c for c in components(model_preset(preset)) if c.startswith("L")]
    workload = {
        "kind": "transformer",
        "data": data,
        "sgld_seqs": sgld_seqs,
        "probe_seqs": probe_seqs,
        "components": heads,
    }
    store = str(out / "chi.zarr")
    chi_summary = susceptibilities(
        store, workload, [ckpt], sampler, dask_address=dask_address, n_workers=n_workers
    )
    info = spacing_weights(store, chi_step, reference["run_dir"], data, alpha, eval_seqs, str(out))
    jobs = training_jobs(preset, data, train, seeds, info["files"], runs_root, threads)
    for job in jobs:  # induce / repress weights are Amplify / Suppress here
        condition, rest = job["label"].split(" ", 1)
        job["label"] = f"{CONDITION_OF.get(condition, condition)} {rest}"
    logger.info("%d training runs (%d seeds × 3 conditions)", len(jobs), len(seeds))
    if dask_address or n_workers > 1:
        runner = make_task_runner(dask_address, n_workers, 1)
        results = retrain_all.with_options(task_runner=runner)(jobs)
    else:
        results = [retrain_weighted(**job) for job in jobs]
    runs = []
    for job, result in zip(jobs, results, strict=True):
        measures = spacing_measures(result["run_dir"], data, eval_seqs)
        runs.append(
            {
                "condition": job["label"].split()[0],
                "seed": job["train_settings"]["seed"],
                "run_dir": result["run_dir"],
                **measures,
            }
        )
    numbers = {
        **settings,
        **info["spacing"],
        "steps": train["steps"],
        "curve_steps": runs[0]["curve_steps"],
        "results": runs,
        "seconds_total": time.perf_counter() - started,
    }
    report = write_spacing_report(str(out), numbers)
    trained = sum(r["trained_steps"] for r in results)
    logger.info("report %s; %d optimizer steps trained in this run", report["report"], trained)
    return {
        "report": report["report"],
        "out_dir": str(out),
        "rows": report["rows"],
        "trained_steps": trained,
        "chi_shards_computed": chi_summary["computed"],
        "mode": info["spacing"]["mode"],
    }


# --------------------------------------------------------------------------- command line


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of :func:`main_cli` (add them to a subcommand's parser, or a new one)."""
    p = parser or argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--chi-step", type=int, default=1000, help="checkpoint of χ")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--draws", type=int, default=None, help="SGLD draws per chain")
    p.add_argument("--eval-seqs", type=int, default=256)
    add_output_and_workers(p, workers_help="χ shards and runs in parallel")
    return p


def params_from_args(args: argparse.Namespace) -> dict:
    train = dict(SPACING_TRAIN)
    if args.steps is not None:
        train["steps"] = args.steps
        train["checkpoint_steps"] = [s for s in range(0, args.steps + 1, 250)]
    sampler = SamplerConfig().to_dict()
    if args.draws is not None:
        sampler["num_draws"] = args.draws
    return {
        "preset": args.preset,
        "train": train,
        "seeds": args.seeds,
        "chi_step": args.chi_step,
        "alpha": args.alpha,
        "sampler": sampler,
        "eval_seqs": args.eval_seqs,
        "out_dir": args.out,
        "runs_root": args.runs_root,
        "dask_address": args.dask_address,
        "n_workers": args.workers,
    }


def main_cli(args: argparse.Namespace) -> int:
    """Run the flow from parsed :func:`build_parser` arguments and print its table."""
    from flows.command_runs import run_tracked
    from flows.server import prefect_api

    params = params_from_args(args)
    check_spacing_parameters(**params)
    with prefect_api():
        result = run_tracked(spacing, **params)
    print_run_table(result)
    return 0
