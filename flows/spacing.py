"""The ``spacing`` flow: weighting along the χ mode of the heads that predict whitespace
(the whitespace experiment of demonstration 1, method.md §7).

1. The reference baseline (seed ``seeds[0]``) trains on the data (default: the corpus
   alone), memoized like the pipeline's runs.
2. χ of its 16 heads at ``chi_step`` through the ``susceptibilities`` flow (sharded over
   Dask, cached and resumable in ``<out>/chi.zarr``).
3. Spacing scores of the heads at the reference's last checkpoint; the spacing mode (the χ
   mode whose unit loadings correlate most with whitespace targets); Amplify / Suppress
   weights along it, extrapolated by spacing class
   (``patterning_core.experiments.spacing.weights``).
4. Baseline, Amplify and Suppress retrained for every seed from the same initialization and
   data order (memoized run folders keyed on the weights' digest: a rerun trains nothing).
5. Loss on whitespace and other targets, spacing scores (one task per run), report
   (Markdown, PNG, artifact; ``patterning_core.experiments.spacing.report``).

    patterning spacing --seeds 0 1 2        # ≈ 10 min on 2 cores
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.parameters import SpacingParameters, SusceptibilityParameters
from flows.retraining import condition_of, retrain, training_jobs
from flows.susceptibilities import susceptibilities
from patterning_core.experiments.spacing.weights import CONDITION_OF
from patterning_core.model.transformer import components
from patterning_core.workspace import patterning_home, settings_digest
from tasks.spacing import spacing_measures, spacing_weights, write_spacing_report
from tasks.training import model_preset, train_model


@flow(name="spacing")
def spacing(params: SpacingParameters | None = None) -> dict:
    """Run the spacing experiment (module docstring; fields and defaults:
    :class:`flows.parameters.SpacingParameters`). χ shards and training runs go to a Dask
    cluster (``n_workers`` local processes, or ``dask_address``); the report and χ store
    to ``out_dir`` (default ``$PATTERNING_HOME/spacing/<key>``), the runs to ``runs_root``
    (default ``$PATTERNING_HOME/runs``).

    Returns ``{"report", "out_dir", "rows", "trained_steps", "chi_shards_computed",
    "mode"}``.
    """
    started = time.perf_counter()
    p = params or SpacingParameters()
    preset, data, train, seeds, sampler = p.preset, p.data, p.train, p.seeds, p.sampler
    chi_step, alpha, threads = p.chi_step, p.alpha, p.threads
    sgld_seqs, probe_seqs, eval_seqs = p.sgld_seqs, p.probe_seqs, p.eval_seqs
    logger = get_run_logger()
    home = patterning_home()
    runs_root = p.runs_root or str(home / "runs")
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
    out = Path(p.out_dir) if p.out_dir else home / "spacing" / key
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
        SusceptibilityParameters(
            store=store,
            workload=workload,
            checkpoints=[ckpt],
            sampler=sampler,
            dask_address=p.dask_address,
            n_workers=p.n_workers,
        )
    )
    info = spacing_weights(store, chi_step, reference["run_dir"], data, alpha, eval_seqs, str(out))
    # induce / repress weights are Amplify / Suppress here
    jobs = training_jobs(
        preset, data, train, seeds, info["files"], runs_root, threads, names=CONDITION_OF
    )
    logger.info("%d training runs (%d seeds × 3 conditions)", len(jobs), len(seeds))
    results = retrain(jobs, p.dask_address, p.n_workers)
    runs = [
        {
            "condition": condition_of(job),
            "seed": job["train_settings"]["seed"],
            "run_dir": result["run_dir"],
            **spacing_measures(result["run_dir"], data, eval_seqs),
        }
        for job, result in zip(jobs, results, strict=True)
    ]
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
