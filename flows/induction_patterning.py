"""The ``induction-patterning`` flow: Induce and Repress the induction circuit by
re-weighting the training data (method.md §7, demonstration 1).

χ at a checkpoint before the circuit forms (from a χ store the ``pipeline`` flow wrote)
and the heads' later prefix-matching scores (the reference run's last checkpoint) give the
Induce and Repress weights (``patterning_core.experiments.induction.weights``); the
preset is then retrained from the same initialization and data order (same seed) with
uniform, Induce and Repress weights for every seed, and a report
(``patterning_core.experiments.induction.report``) compares when the circuit forms.

    weights ──► retrain (baseline, Induce, Repress) × seeds ──► report

Memoized like the rest: each training run lives in a folder named by a digest of its
settings and weights and resumes from its last checkpoint, so a rerun trains nothing.

    patterning induce --chi-store .patterning/demo/chi.zarr --chi-step 2000
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.parameters import InductionPatterningParameters
from flows.retraining import condition_of, retrain, training_jobs
from patterning_core.store.chi_store import open_chi
from patterning_core.workspace import patterning_home, settings_digest
from tasks.induction_patterning import patterning_weights, write_patterning_report
from tasks.training import train_model


def experiment_key(chi_store: str, settings: dict) -> str:
    """The report folder's name: a digest of the χ store's identity and the settings."""
    store_id = open_chi(chi_store).attrs.get("store_id", str(Path(chi_store).resolve()))
    return settings_digest([store_id, settings])


@flow(name="induction-patterning")
def induction_patterning(params: InductionPatterningParameters) -> dict:
    """Compute Induce/Repress weights from χ at ``params.chi_step``, retrain every
    condition for every seed, and write the report (fields:
    :class:`flows.parameters.InductionPatterningParameters`). Training runs go to a Dask
    cluster (``n_workers`` local processes, or ``dask_address``); ``n_workers <= 1`` runs
    them one by one here. The runs live under ``runs_root`` (default
    ``$PATTERNING_HOME/runs``, shared with the pipeline: the uniform seed-0 run of the demo
    recipe is its reference run); the report under ``out_dir`` (default
    ``$PATTERNING_HOME/induction_patterning/<key>``).

    Returns ``{"report", "out_dir", "rows", "verdicts", "trained_steps", "weights"}``.
    """
    p = params
    chi_store, chi_step, reference_run_dir = p.chi_store, p.chi_step, p.reference_run_dir
    preset, data, train, seeds = p.preset, p.data, p.train, p.seeds
    alpha, rcond, negative, threads = p.alpha, p.rcond, p.negative, p.threads
    logger = get_run_logger()
    home = patterning_home()
    runs_root = p.runs_root or str(home / "runs")
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
        Path(p.out_dir)
        if p.out_dir
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
    results = retrain(jobs, p.dask_address, p.n_workers)
    runs = [{**r, "condition": condition_of(job)} for r, job in zip(results, jobs, strict=True)]
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
