"""The ``spacing-fin`` flow: the spacing fin grown (χ over training) and erased (three
interventions, χ measured again on every retrained model).

1. The reference (seed ``seeds[0]``) trains on the corpus tokenized with every whitespace
   character a token (``recipes.fin_data``), memoized like every run.
2. χ of every head, the embedding and the unembedding at ``chi_checkpoints``
   (``susceptibilities`` subflow: shards on Dask, Zarr store, resumable), and the fin
   metric at each (``experiments/spacing/fin.py``); also χ of the initialization (step 0,
   its own store per seed), the floor against which a fin is read as learned: run position
   decoded beyond what the untrained network's χ already holds.
3. From χ at ``weights_step``: χ-suppress weights along the fin mode and the same-dose
   whitespace control (``fin_weights``).
   With ``further_mode``, also a further mode picked by a fixed rule and its amplify
   weights, the prediction written down before any run is retrained
   (``experiments/spacing/further_mode.py``, ``further_mode_plan.json``).
4. For every seed, from the same initialization and data order: baseline, the data edit
   that collapses runs of spaces, χ-suppress, control, and with ``further_mode`` the
   further mode amplified (``flows.retraining``).
5. χ again at the last checkpoint of every retrained model (its own store; the same
   workload on the unedited data, so every model is probed on the same tokens), the fin
   metric read off it, and the validation losses on whitespace and other targets (and the
   further mode's readings: class separation, class loss, localized losses).
6. With ``replica_seed``, χ of the reference's last χ checkpoint again with that SGLD seed
   (``chi_replica.zarr``), read the same way: the sampler noise of every reading above.
7. Report, plot and ``results.json`` (``fin_report``).

    patterning run spacing-fin     # ≈ 1.5 h on 2 cores; a rerun recomputes nothing
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.parameters import SpacingFinParameters, SusceptibilityParameters
from flows.retraining import experiment_folders, retrain, training_jobs
from flows.susceptibilities import susceptibilities
from patterning_core.experiments.spacing.fin_report import summarize_fin
from patterning_core.experiments.spacing.further_mode import sampler_noise
from patterning_core.model.checkpoints import list_checkpoints
from tasks.spacing import spacing_measures
from tasks.spacing_fin import (
    fin_of_store,
    fin_suppress_weights,
    further_mode_plan,
    further_mode_reading,
    write_fin_report,
)
from tasks.training import train_model

CONDITIONS = ("baseline", "collapse_whitespace", "chi_suppress", "control_dose")


@flow(name="spacing-fin")
def spacing_fin(params: SpacingFinParameters | None = None) -> dict:
    """Run the experiment (module docstring; fields and defaults:
    :class:`flows.parameters.SpacingFinParameters`) into ``params.out_dir`` (default
    ``$PATTERNING_HOME/spacing_fin/<digest of the parameters>``). Returns ``{"report",
    "results", "targets"}``."""
    started = time.perf_counter()
    p = params or SpacingFinParameters()
    logger = get_run_logger()
    runs_root, settings, out = experiment_folders(p, "spacing_fin")

    reference = train_model(p.preset, p.data, {**p.train, "seed": p.seeds[0]}, runs_root, p.threads)
    checkpoints = [c for c in reference["checkpoints"] if c["step"] in p.chi_checkpoints]
    workload = {
        "kind": "transformer",
        "data": p.data,
        "sgld_seqs": p.sgld_seqs,
        "probe_seqs": p.probe_seqs,
    }

    def chi_store(store: Path, ckpts: list[dict], sampler: dict | None = None) -> str:
        susceptibilities(
            SusceptibilityParameters(
                store=str(store),
                workload=workload,
                checkpoints=ckpts,
                sampler=sampler or p.sampler,
                dask_address=p.dask_address,
                n_workers=p.n_workers,
            )
        )
        return str(store)

    reference_store = chi_store(out / "chi.zarr", checkpoints)
    init_stores: dict[int, str | None] = {}

    def init_store(seed: int, run_checkpoints: list[dict]) -> str | None:
        """χ of the seed's initialization (every condition of a seed starts from it)."""
        if seed not in init_stores:
            step0 = [c for c in run_checkpoints if c["step"] == 0]
            init_stores[seed] = (
                chi_store(out / f"chi_init_seed{seed}.zarr", step0) if step0 else None
            )
        return init_stores[seed]

    reference_init = init_store(p.seeds[0], reference["checkpoints"])
    growth = [
        fin_of_store(reference_store, c["step"], p.preset, "reference", reference_init)
        for c in checkpoints
    ]
    if reference_init is not None and 0 not in p.chi_checkpoints:
        growth.insert(0, fin_of_store(reference_init, 0, p.preset, "initialization"))
    at_weights = next(f for f in growth if f["step"] == p.weights_step)
    weights = fin_suppress_weights(
        reference_store, p.weights_step, at_weights, p.data, p.preset, p.alpha, str(out)
    )
    files, conditions, further = dict(weights["files"]), CONDITIONS, None
    if p.further_mode:
        further = further_mode_plan(
            reference_store, p.weights_step, at_weights, p.data, p.preset, p.alpha, str(out)
        )
        files.update(further["files"])
        conditions = (*CONDITIONS, "chi_further_mode")
    jobs = training_jobs(
        p.preset,
        p.data,
        p.train,
        p.seeds,
        files,
        runs_root,
        p.threads,
        conditions=conditions,
        data_by_condition={"collapse_whitespace": {**p.data, "collapse_spaces": True}},
    )
    logger.info(
        "%d training runs (%d seeds × %d conditions)", len(jobs), len(p.seeds), len(conditions)
    )
    results = retrain(jobs, p.dask_address, p.n_workers)
    for job, result in zip(jobs, results, strict=True):
        if job["label"].startswith("baseline"):
            steps = [{"step": s, "path": str(f)} for s, f in list_checkpoints(result["run_dir"])]
            init_store(job["train_settings"]["seed"], steps)
    runs = []
    for job, result in zip(jobs, results, strict=True):
        condition, seed = job["label"].split()[0], job["train_settings"]["seed"]
        last, path = list_checkpoints(result["run_dir"])[-1]
        if job["label"] == f"baseline seed {p.seeds[0]}" and last in p.chi_checkpoints:
            store = reference_store  # the reference is this run: its χ is there already
        else:
            store = chi_store(
                out / "retrained" / f"{condition}_seed{seed}.zarr",
                [{"step": last, "path": str(path)}],
            )
        fin = fin_of_store(store, last, p.preset, job["label"], init_stores.get(seed))
        losses = spacing_measures(result["run_dir"], p.data, p.eval_seqs)["losses"]
        run = {}
        if further is not None:
            run["further"] = further_mode_reading(
                store,
                last,
                p.preset,
                further["summary"]["pattern_class"],
                result["run_dir"],
                p.data,
                p.eval_seqs,
            )
        runs.append(
            {
                **run,
                "seed": seed,
                "condition": condition,
                "run_dir": result["run_dir"],
                "step": last,
                "fin_metric": fin["metric"],
                "fin": fin,
                "loss_whitespace": losses["spacing"],
                "loss_other": losses["other"],
            }
        )
    noise = None
    if p.replica_seed is not None:
        replica = chi_store(
            out / "chi_replica.zarr", checkpoints[-1:], {**p.sampler, "seed": p.replica_seed}
        )
        stores = (reference_store, replica)
        noise = _sampler_noise(p, stores, checkpoints[-1]["step"], reference, further)
    numbers = summarize_fin(
        settings,
        growth,
        weights["summary"],
        runs,
        time.perf_counter() - started,
        further["summary"] if further else None,
        noise,
    )
    paths = write_fin_report(p.report_dir or str(out), numbers)
    logger.info("report %s", paths["report"])
    return {**paths, "targets": numbers["targets"]}


def _sampler_noise(
    p: SpacingFinParameters,
    stores: tuple[str, str],
    step: int,
    reference: dict,
    further: dict | None,
) -> dict:
    """The reference's χ at ``step`` and its replica with SGLD seed ``p.replica_seed``
    (``stores``), read as every retrained run is read (``further_mode.sampler_noise``)."""
    labels = ("reference", f"reference, SGLD seed {p.replica_seed}")
    fins = [fin_of_store(s, step, p.preset, label) for s, label in zip(stores, labels, strict=True)]
    readings = []
    if further is not None:
        cls = further["summary"]["pattern_class"]
        readings = [
            further_mode_reading(s, step, p.preset, cls, reference["run_dir"], p.data, p.eval_seqs)
            for s in stores
        ]
    return sampler_noise(fins, readings, further["summary"] if further else None)
