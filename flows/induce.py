"""The ``induce`` flow: χ steers the induction circuit of a model trained on natural text,
against same-dose controls (demonstration 1).

1. The reference (seed ``seeds[0]``, uniform weights) trains on the corpus with at most a
   fifth synthetic sequences (``recipes.induce_data``), memoized like every run; every
   head's prefix-matching and previous-token score at every checkpoint.
2. χ of every head, the embedding and the unembedding at ``chi_checkpoints`` (before the
   circuit forms; ``susceptibilities`` subflow: shards on Dask, Zarr store, resumable).
   At ``weights_step`` also χ with a second SGLD seed (the mode's reproducibility and the
   seed-to-seed noise) and, with ``convergence``, with twice the draws and with a burn-in
   (``estimators.convergence``). With ``published_chi`` χ at ``weights_step`` is read from
   a published file instead (its sha256 checked), and none of these is sampled.
3. The induction mode found among the leading modes; weights for every training token from
   the features extrapolator, at the dose ``ratio``: Induce, Repress, a random target in
   the other modes, Induce shuffled within pattern classes (``natural_weights``). With
   ``target="circuit"`` the target is the circuit itself (the heads' later circuit scores,
   ``circuit_scores`` or the reference's), with ``extrapolator="cells"`` one weight per
   cell of sequence kind × predictable (``cell_weights``). With ``class_neutral`` every
   solved condition keeps each pattern class's mean weight at 1 (``natural_weights``), so
   that the class shuffle re-weights no class.
4. For every seed, from the same initialization and data order: baseline and the four
   weighted conditions (``flows.retraining``); formation step, held-out unweighted loss.
5. χ again at ``loop_step`` (default ``weights_step``) of every retrained run of
   ``loop_seeds`` (default: the first seed; ``loop/<run folder>-<sampler digest>-<step>.zarr``,
   sampled with ``loop_sampler`` when set, the baseline too), and each condition's shift
   of the localized losses against its prediction (``experiments/induction/loop.py``).
   With ``weights_from_step`` the weighted runs are the baseline up to that step and
   re-weighted from it on. Before retraining, the linear response of the two-run χ itself
   at small doses of the Induce weights (``linear_check``).
6. Report, plot and ``results.json`` (``natural_report``).

    patterning run induce     # hours on 2 cores; a rerun recomputes nothing
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.parameters import InduceParameters, SusceptibilityParameters
from flows.retraining import experiment_folders, retrain, training_jobs
from flows.runtime import file_digest
from flows.susceptibilities import susceptibilities
from patterning_core.experiments.induction.natural_report import CONDITIONS, summarize_induce
from patterning_core.model.checkpoints import list_checkpoints
from patterning_core.workspace import settings_digest
from tasks.induce import (
    chi_convergence,
    head_score_curve,
    induce_weights,
    linear_check,
    loop_closure,
    mode_reproducibility,
    write_induce_report,
)
from tasks.reporting import invoking_command
from tasks.training import train_model


@flow(name="induce")
def induce(params: InduceParameters | None = None) -> dict:
    """Run the experiment (module docstring; fields and defaults:
    :class:`flows.parameters.InduceParameters`) into ``params.out_dir`` (default
    ``$PATTERNING_HOME/induce/<digest of the parameters>``). Returns ``{"report",
    "results", "targets"}``."""
    started = time.perf_counter()
    p = params or InduceParameters()
    logger = get_run_logger()
    runs_root, settings, out = experiment_folders(p, "induce")

    # 1. The reference and its heads over training.
    reference_run = train_model(
        p.preset, p.data, {**p.train, "seed": p.seeds[0]}, runs_root, p.threads
    )
    reference = head_score_curve(reference_run["run_dir"], p.preset)
    logger.info(
        "reference: formation step %s, %d of %d layer-1 heads induction heads",
        reference["formation_step"],
        reference["layer1_induction_heads"],
        reference["layer1_heads"],
    )

    # 2. χ before formation; at the weights step also a replica seed and the variants
    #    (or χ at the weights step read from a published file: none of these).
    by_step = {c["step"]: c for c in reference_run["checkpoints"]}
    at_weights = [by_step[p.weights_step]]
    published_chi = None
    if p.published_chi is not None:
        published_chi = {
            "path": p.published_chi,
            "sha256": p.published_chi_sha256,
            "workload": p.chi_workload(),
        }
        main_store = replica_store = None
        skipped = {"not_measured": f"χ read from the published file {p.published_chi}"}
        convergence = dict(skipped)
    else:
        main_store = _chi_store(
            p, out / "chi.zarr", [by_step[s] for s in p.chi_checkpoints], p.sampler
        )
        replica_store = _chi_store(
            p, out / "chi_replica.zarr", at_weights, {**p.sampler, "seed": p.replica_seed}
        )
        variants = {}
        if p.convergence:
            draws, seed = int(p.sampler["num_draws"]), p.replica_seed + 1
            longer = {**p.sampler, "num_draws": 2 * draws, "seed": seed}
            burned = {**p.sampler, "num_burnin": draws, "seed": seed + 1}
            variants = {
                "twice_the_draws": {
                    "store": _chi_store(p, out / "chi_draws2x.zarr", at_weights, longer),
                    "draw_ratio": 0.5,
                },
                "burn_in": {
                    "store": _chi_store(p, out / "chi_burnin.zarr", at_weights, burned),
                    "draw_ratio": 1.0,
                },
            }
        convergence = chi_convergence(main_store, replica_store, variants, p.weights_step)

    # 3. The mode and the weights (the circuit scores as the user states them, or the
    #    reference's own).
    head_scores = p.circuit_scores or reference["later_scores"]
    weights = induce_weights(
        main_store,
        p.weights_step,
        p.data,
        p.preset,
        head_scores,
        p.ratio,
        p.n_leading,
        str(out),
        p.report_dir,
        p.extrapolator,
        p.target_mode,
        p.chi_estimator,
        p.balance_positions,
        p.target,
        published_chi,
        p.class_neutral,
    )
    if published_chi is None:
        reproducibility = mode_reproducibility(
            main_store,
            replica_store,
            p.weights_step,
            p.preset,
            head_scores,
            weights["summary"]["mode"],
            p.chi_estimator,
        )
    else:
        reproducibility = dict(skipped)

    # The linear response of the two-run χ that the weights invert, at small doses.
    check = {}
    if p.linear_check:
        step = by_step[p.weights_step]
        check = linear_check(
            {**step, "digest": file_digest(step["path"])},
            p.preset,
            p.data,
            weights["files"]["induce"],
            head_scores,
            p.sampler,
            p.linear_check_seqs,
            p.linear_check_fractions,
        )

    # 4–5. Retraining and χ again on the retrained models, unless the mode was not found.
    if weights["summary"]["mode"]["found"] or p.retrain_without_mode:
        runs, loop = _retrain_and_close_loop(p, weights, runs_root, out, reference_run, main_store)
    else:
        logger.warning(
            "the induction mode was not found at step %d (best candidate: head alignment "
            "%.2f, token correlation %.2f): no retraining (retrain_without_mode=True runs "
            "it anyway); the report says what was measured.",
            p.weights_step,
            weights["summary"]["mode"]["head_alignment"],
            weights["summary"]["mode"]["token_correlation"],
        )
        runs, loop = [], {}

    # 6. The report.
    numbers = summarize_induce(
        settings,
        {k: v for k, v in reference.items() if k != "run_dir"},
        weights,
        reproducibility,
        convergence,
        runs,
        loop,
        time.perf_counter() - started,
        check,
    )
    numbers["command"] = invoking_command()
    paths = write_induce_report(p.report_dir or str(out), numbers)
    logger.info("report %s", paths["report"])
    return {**paths, "targets": numbers["targets"]}


def _chi_store(p: InduceParameters, store: Path, checkpoints: list[dict], sampler: dict) -> str:
    """χ of the reference's workload at ``checkpoints`` into ``store`` (``susceptibilities``
    subflow: shards on Dask, resumable); returns the store's path."""
    susceptibilities(
        SusceptibilityParameters(
            store=str(store),
            workload=p.chi_workload(),
            checkpoints=checkpoints,
            sampler=sampler,
            dask_address=p.dask_address,
            n_workers=p.n_workers,
        )
    )
    return str(store)


def _loop_store(
    p: InduceParameters, run: dict, out: Path, reference_run: dict, main_store: str | None
) -> str:
    """χ at the loop step of one retrained ``run`` with the loop's sampler, in
    ``out/loop/<run folder>-<sampler digest>-<step>.zarr`` (one store per training run,
    sampler and step, so that doses, samplers and loop steps never share one; the reference
    run's is measured at every loop step a design asks for); the reference's own main store when
    ``run`` is the reference and the loop samples as the main store did."""
    sampler = {**p.sampler, **(p.loop_sampler or {})}
    step = p.loop_checkpoint
    is_reference = run["run_dir"] == reference_run["run_dir"]
    if (
        main_store is not None
        and is_reference
        and sampler == p.sampler
        and step in p.chi_checkpoints
    ):
        return main_store
    path = dict(list_checkpoints(run["run_dir"]))[step]
    name = f"{Path(run['run_dir']).name}-{settings_digest(sampler, 8)}-{step}.zarr"
    at_step = [{"step": step, "path": str(path)}]
    return _chi_store(p, out / "loop" / name, at_step, sampler)


def _retrain_and_close_loop(
    p: InduceParameters,
    weights: dict,
    runs_root: Path,
    out: Path,
    reference_run: dict,
    main_store: str | None,
) -> tuple[list[dict], dict]:
    """Every condition for every seed from the same initialization and data order (steps 4
    and 5 of the module doc): the runs, and per loop seed the loop closure."""
    logger = get_run_logger()
    jobs = training_jobs(
        p.preset,
        p.data,
        p.train,
        p.seeds,
        weights["files"],
        runs_root,
        p.threads,
        conditions=[c for c in CONDITIONS if c == "baseline" or c in weights["files"]],
        weights_from_step=p.weights_from_step,
    )
    logger.info("%d training runs (%d seeds)", len(jobs), len(p.seeds))
    results = retrain(jobs, p.dask_address, p.n_workers)
    runs = [
        {
            "seed": job["train_settings"]["seed"],
            "condition": job["label"].split()[0],
            "run_dir": result["run_dir"],
            "formation_step": result["formation_step"],
            "heldout_loss": result["final_val_loss"],
            "final_best_pms": result["best"][-1],
            "steps": result["steps"],
            "best": result["best"],
        }
        for job, result in zip(jobs, results, strict=True)
    ]

    # χ again at the loop checkpoint of every retrained run of the loop seeds.
    loop = {}
    for seed in p.loop_seeds if p.loop_seeds is not None else p.seeds[:1]:
        stores = {
            run["condition"]: _loop_store(p, run, out, reference_run, main_store)
            for run in runs
            if run["seed"] == seed
        }
        loop[str(seed)] = loop_closure(weights["published"], stores, p.loop_checkpoint)

    return runs, loop
