"""The ``induction-patterning`` flow: Induce and Repress the induction circuit by
re-weighting the training data (method.md §7, demonstration 1).

χ at a checkpoint before the circuit forms (from a χ store the ``pipeline`` flow wrote)
and the heads' later prefix-matching scores (the reference run's last checkpoint) give the
Induce and Repress weights (``patterning_core.experiments.induction.patterning``); the preset
is then retrained from the same initialization and data order (same seed) with uniform, Induce and
Repress weights for every seed, and a report compares when the circuit forms.

Memoized like the rest: each training run lives in a folder named by a digest of its
settings and weights and resumes from its last checkpoint, so a rerun trains nothing.

    python scripts/induction_patterning.py --chi-store .patterning/pipeline/<key>/chi.zarr \
        --chi-step 2000 --reference-run .patterning/runs/demo-<key>
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import wait

from flows.runtime import make_task_runner
from patterning_core.experiments.induction.patterning import CONDITIONS, DEFAULT_ALPHA
from patterning_core.sampling.config import ConfigError
from patterning_core.store.chi_store import StoreError, open_chi
from patterning_core.workspace import patterning_home, settings_digest
from tasks.induction_patterning import patterning_weights, write_patterning_report
from tasks.retraining import UNIFORM, retrain_weighted
from tasks.training import check_training_inputs, train_model

DEFAULT_SEEDS = (0, 1, 2)


def default_train() -> dict:
    """The demo recipe (3,000 AdamW steps, checkpoints every 250)."""
    from flows.pipeline import DEMO_TRAIN

    return dict(DEMO_TRAIN)


def store_data_spec(chi_store: str) -> dict | None:
    """The data spec the χ store's workload was built on (None if it records none)."""
    try:
        attrs = open_chi(chi_store).attrs
    except StoreError as err:
        raise ConfigError(f"chi_store: {err}") from err
    workload = json.loads(attrs.get("workload", "{}") or "{}")
    return workload.get("data")


def check_seeds_and_alpha(seeds: list[int] | None, alpha: float) -> list[int]:
    """The seeds (default ``DEFAULT_SEEDS``), after checking them and the weighting's α."""
    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
        raise ConfigError(f"alpha must be a number >= 0, got {alpha!r}.")
    return seeds


def print_run_table(result: dict) -> None:
    """Print a demonstration flow's ``rows`` as a table, then its report and training work."""
    header = list(result["rows"][0])
    print(" | ".join(header))
    for row in result["rows"]:
        print(" | ".join(str(row[h]) for h in header))
    print(f"\nreport: {result['report']}  (optimizer steps trained: {result['trained_steps']})")


def check_induction_patterning_parameters(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str | None = None,
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    seeds: list[int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    rcond: float = 1e-3,
    negative: str = "clip",
    **_runtime: object,
) -> tuple[dict, dict, list[int]]:
    """Validate the parameters before anything is trained or written; returns the resolved
    ``(data, train, seeds)``. A bad one is a ``ConfigError`` naming it and the fix."""
    data = data or store_data_spec(chi_store)
    if data is None:
        raise ConfigError("the χ store records no data spec: pass `data` explicitly.")
    train = dict(train or default_train())
    check_training_inputs(preset, data, train)
    seeds = check_seeds_and_alpha(seeds, alpha)
    if not math.isfinite(alpha) or not (isinstance(rcond, int | float) and 0 <= rcond < 1):
        raise ConfigError(f"alpha must be finite and rcond in [0, 1), got {alpha}, {rcond}.")
    if negative not in ("clip", "shift"):
        raise ConfigError(f"negative must be 'clip' or 'shift', got {negative!r}.")
    if reference_run_dir is not None and not Path(reference_run_dir).is_dir():
        raise ConfigError(f"reference_run_dir {reference_run_dir} is not a folder.")
    steps = [int(s) for s in open_chi(chi_store).checkpoint.values]
    if chi_step not in steps:
        raise ConfigError(f"chi_step {chi_step} is not in the χ store (it has {steps}).")
    return data, train, seeds


@flow(name="induction-retraining")
def retrain_all(jobs: list[dict]) -> list[dict]:
    """Submit every training run; wait for all (a failure does not stop the others)."""
    futures = [retrain_weighted.submit(**job) for job in jobs]
    wait(futures)
    return [f.result() for f in futures]


def training_jobs(
    preset: str,
    data: dict,
    train: dict,
    seeds: list[int],
    files: dict,
    runs_root: str,
    threads: int,
) -> list[dict]:
    """Baseline, Induce and Repress for every seed (same seed: same init and data order)."""
    jobs = []
    for seed in seeds:
        for condition in ("baseline", *CONDITIONS):
            weights = files.get(condition)
            jobs.append(
                {
                    "preset": preset,
                    "data": data,
                    "train_settings": {**train, "seed": seed},
                    "weights_path": weights["path"] if weights else None,
                    "weights_digest": weights["digest"] if weights else UNIFORM,
                    "runs_root": runs_root,
                    "threads": threads,
                    "label": f"{condition} seed {seed}",
                }
            )
    return jobs


def experiment_key(chi_store: str, settings: dict) -> str:
    store_id = open_chi(chi_store).attrs.get("store_id", str(Path(chi_store).resolve()))
    return settings_digest([store_id, settings])


@flow(name="induction-patterning")
def induction_patterning(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str | None = None,
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    seeds: list[int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    rcond: float = 1e-3,
    negative: str = "clip",
    out_dir: str | None = None,
    runs_root: str | None = None,
    dask_address: str | None = None,
    n_workers: int = 2,
    threads: int = 1,
) -> dict:
    """Compute Induce/Repress weights from χ at ``chi_step``, retrain every condition for
    every seed, and write the report.

    Args:
        chi_store: χ store (e.g. ``.patterning/pipeline/<key>/chi.zarr``).
        chi_step: checkpoint of χ, before the circuit forms.
        reference_run_dir: run whose last checkpoint gives the head scores (None: train
            ``preset`` on ``data`` with ``train``, memoized like the pipeline's run).
        preset, data, train: model, data spec (default: the χ store's) and training recipe
            (default: the demo's, ``flows.pipeline.DEMO_TRAIN``); ``seed`` is set per run.
        seeds: one baseline, Induce and Repress run each (default 0, 1, 2).
        alpha, rcond, negative: magnitude, pseudo-inverse cut-off, negative-weight rule
            (``patterning_core.experiments.induction.patterning``).
        out_dir: report folder (default ``$PATTERNING_HOME/induction_patterning/<key>``).
        runs_root: training runs (default ``$PATTERNING_HOME/runs``, shared with the
            pipeline: the uniform seed-0 run of the demo recipe is its reference run).
        dask_address, n_workers, threads: runs go to a Dask cluster (``n_workers`` local
            processes, or ``dask_address``); ``n_workers <= 1`` runs them one by one here.

    Returns ``{"report", "out_dir", "rows", "verdicts", "trained_steps", "weights"}``.
    """
    data, train, seeds = check_induction_patterning_parameters(
        chi_store, chi_step, reference_run_dir, preset, data, train, seeds, alpha, rcond, negative
    )
    logger = get_run_logger()
    home = patterning_home()
    runs_root = runs_root or str(home / "runs")
    if reference_run_dir is None:
        reference_run_dir = train_model(preset, data, train, runs_root, threads)["run_dir"]
    settings = {
        "chi_store": chi_store,
        "chi_step": chi_step,
        "reference_run_dir": reference_run_dir,
        "preset": preset,
        "data": data,
        "train": train,
        "seeds": seeds,
        "alpha": alpha,
        "rcond": rcond,
        "negative": negative,
        "runs_root": runs_root,
    }
    out = (
        Path(out_dir)
        if out_dir
        else home / "induction_patterning" / experiment_key(chi_store, settings)
    )
    out.mkdir(parents=True, exist_ok=True)
    weights = patterning_weights(
        chi_store, chi_step, reference_run_dir, preset, data, alpha, rcond, negative, str(out)
    )
    jobs = training_jobs(preset, data, train, seeds, weights["files"], runs_root, threads)
    logger.info(
        "%d training runs (%d seeds × 3 conditions) under %s", len(jobs), len(seeds), runs_root
    )
    if dask_address or n_workers > 1:
        runner = make_task_runner(dask_address, n_workers, 1)
        results = retrain_all.with_options(task_runner=runner)(jobs)
    else:
        results = [retrain_weighted(**job) for job in jobs]
    runs = [
        {**r, "condition": job["label"].split()[0]} for r, job in zip(results, jobs, strict=True)
    ]
    report = write_patterning_report(str(out), settings, weights, runs)
    trained = sum(r["trained_steps"] for r in runs)
    logger.info("report %s; %d optimizer steps trained in this run", report["report"], trained)
    return {
        "report": report["report"],
        "out_dir": str(out),
        "rows": report["rows"],
        "verdicts": report["verdicts"],
        "trained_steps": trained,
        "weights": {
            k: weights["summary"][k]
            for k in ("mode", "alignment", "sign_induce", "fit_r2", "alpha", "conditions")
        },
    }


# --------------------------------------------------------------------------- command line


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of :func:`main_cli` (add them to a subcommand's parser, or a new one)."""
    p = parser or argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chi-store", required=True, help="χ store written by the pipeline")
    p.add_argument("--chi-step", type=int, required=True, help="checkpoint of χ")
    p.add_argument("--reference-run", default=None, help="run whose last checkpoint scores heads")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    p.add_argument("--rcond", type=float, default=1e-3)
    p.add_argument("--negative", choices=("clip", "shift"), default="clip")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    add_output_and_workers(p, workers_help="training runs in parallel")
    return p


def add_output_and_workers(p: argparse.ArgumentParser, workers_help: str) -> None:
    """The options every demonstration command shares: where results and runs go, and where
    and how widely the work runs."""
    p.add_argument("--out", default=None, help="report folder")
    p.add_argument("--runs-root", default=None, help="folder of the training runs")
    p.add_argument("--dask-address", default=None)
    p.add_argument("--workers", type=int, default=2, help=workers_help)


def main_cli(args: argparse.Namespace) -> int:
    """Run the flow from parsed :func:`build_parser` arguments (Prefect server as the
    ``patterning`` command gets one) and print the formation table."""
    from flows.command_runs import run_tracked
    from flows.server import prefect_api

    train = default_train()
    if args.steps is not None:
        train["steps"] = args.steps
    params = {
        "chi_store": args.chi_store,
        "chi_step": args.chi_step,
        "reference_run_dir": args.reference_run,
        "preset": args.preset,
        "train": train,
        "seeds": args.seeds,
        "alpha": args.alpha,
        "rcond": args.rcond,
        "negative": args.negative,
        "out_dir": args.out,
        "runs_root": args.runs_root,
        "dask_address": args.dask_address,
        "n_workers": args.workers,
    }
    check_induction_patterning_parameters(**params)
    with prefect_api():
        result = run_tracked(induction_patterning, **params)
    print_run_table(result)
    return 0
