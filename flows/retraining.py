"""Retraining a preset under several data weightings: the jobs (baseline and the two
weighted conditions for every seed) and the ``induction-retraining`` subflow that runs them
on a Dask cluster. Shared by the ``induction-patterning`` and ``spacing`` flows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import flow
from prefect.futures import wait

from flows.runtime import make_task_runner
from patterning_core.estimators.mode_weights import CONDITIONS
from patterning_core.workspace import patterning_home, settings_digest
from tasks.retraining import UNIFORM, retrain_weighted, uniform_prefix_settings
from tasks.training import train_model

#: Fields that say where an experiment runs and writes, not what it computes.
PLACEMENT = {"out_dir", "report_dir", "runs_root", "dask_address", "n_workers"}


def experiment_folders(params, name: str) -> tuple[str, dict, Path]:
    """``(runs_root, settings, out)`` of an experiment flow's parameters (a
    ``RetrainingFields`` model): the shared runs folder (default ``$PATTERNING_HOME/runs``),
    the settings that decide the results (every field but :data:`PLACEMENT`), and the output
    folder (``params.out_dir``, default ``$PATTERNING_HOME/<name>/<digest of the
    settings>``), created."""
    home = patterning_home()
    runs_root = params.runs_root or str(home / "runs")
    settings = params.model_dump(exclude=PLACEMENT)
    out = Path(params.out_dir) if params.out_dir else home / name / settings_digest(settings)
    out.mkdir(parents=True, exist_ok=True)
    return runs_root, settings, out


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
    names: Mapping[str, str] | None = None,
    conditions: Sequence[str] | None = None,
    data_by_condition: Mapping[str, dict] | None = None,
    weights_from_step: int = 0,
) -> list[dict]:
    """Baseline, Induce and Repress for every seed (same seed: same init and data order).

    ``files``: ``{condition: {"path", "digest"}}`` of the weights; ``names``: the
    experiment's name of a condition in the run labels (``"<name> seed <seed>"``; default:
    the condition itself); ``conditions``: the conditions per seed (default: baseline,
    Induce, Repress); ``data_by_condition``: a data spec replacing ``data`` for a condition
    (a data edit rather than weights). A condition without a weights file trains uniformly.
    ``weights_from_step``: weighted conditions apply their weights from this step on (their
    runs are the baseline's up to it; ``TrainConfig.weights_from_step``).
    """
    names = names or {}
    data_by_condition = data_by_condition or {}
    jobs = []
    for seed in seeds:
        for condition in conditions or ("baseline", *CONDITIONS):
            weights = files.get(condition)
            jobs.append(
                {
                    "preset": preset,
                    "data": data_by_condition.get(condition, data),
                    "train_settings": {
                        **train,
                        "seed": seed,
                        **(
                            {"weights_from_step": weights_from_step}
                            if weights_from_step and weights
                            else {}
                        ),
                    },
                    "weights_path": weights["path"] if weights else None,
                    "weights_digest": weights["digest"] if weights else UNIFORM,
                    "runs_root": runs_root,
                    "threads": threads,
                    "label": f"{names.get(condition, condition)} seed {seed}",
                }
            )
    return jobs


def condition_of(job: dict) -> str:
    """The condition a job's label names (its first word)."""
    return job["label"].split()[0]


def retrain(jobs: list[dict], dask_address: str | None, n_workers: int) -> list[dict]:
    """Run every job: on a Dask cluster (``dask_address``, or ``n_workers`` local processes)
    through :func:`retrain_all`, or one by one here when ``n_workers <= 1`` and no address.

    Weighted jobs re-weighted from a step ``s`` first get the uniform run up to ``s``
    (``train_model``, memoized like every run), which each of them then starts from
    (``tasks.retraining.seed_from_uniform_prefix``) instead of training those steps again."""
    prefixes = {}
    for job in jobs:
        prefix = uniform_prefix_settings(job["train_settings"])
        if prefix is not None and job["weights_path"] is not None:
            key = settings_digest({"preset": job["preset"], "data": job["data"], "train": prefix})
            prefixes[key] = (job["preset"], job["data"], prefix, job["runs_root"], job["threads"])
    for preset, data, prefix, runs_root, threads in prefixes.values():
        train_model(preset, data, prefix, runs_root, threads)
    if dask_address or n_workers > 1:
        runner = make_task_runner(dask_address, n_workers, 1)
        return retrain_all.with_options(task_runner=runner)(jobs)
    return [retrain_weighted(**job) for job in jobs]
