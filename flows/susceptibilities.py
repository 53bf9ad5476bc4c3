"""The ``susceptibilities`` flow: χ for chosen checkpoints, sharded over Dask workers.

Shards are (checkpoint × component group × chain) plus (checkpoint × full run × chain).
Only shards not complete in the store are submitted, so a killed run started again
recomputes only what is missing, and a completed run does no sampling at all.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger
from prefect.futures import wait

from flows.parameters import SusceptibilityParameters
from flows.runtime import cluster_has_gpus, file_digest, make_task_runner, shard_resources
from patterning_core.estimators.susceptibility import group_components
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.workloads import build_workload
from tasks.susceptibility import (
    FULL_RUN,
    CheckpointShards,
    assemble,
    prepare_store,
    susceptibility_shard,
)

DATA_FILE_KEYS = ("tokens", "data_file")  # workload keys that name a data file


@flow(name="susceptibility-shards")
def run_shards(shards: list[dict], use_gpu: bool = False) -> list[dict]:
    """Submit every shard; wait for all of them (a failure does not stop the others)."""
    with shard_resources(use_gpu):
        futures = [susceptibility_shard.submit(**shard) for shard in shards]
    wait(futures)
    # A cache hit (another run computed the shard while this one waited for its lock)
    # returns that run's summary: report it as found, not computed.
    return [
        {**f.result(), "status": "cached"} if f.state.name == "Cached" else f.result()
        for f in futures
    ]


def plan_shards(
    store: str,
    store_id: str,
    workload: dict,
    checkpoints: list[dict],
    digests: dict[str, str],
    sampler: dict,
    max_lanes: int | None,
    threads: int,
) -> tuple[list[dict], int]:
    """The shards not yet complete in the store, and how many are already there."""
    config = SamplerConfig.from_dict(sampler)
    work = build_workload(workload, checkpoints[0].get("path"))
    groups = [*group_components(work.components, max_lanes, num_chains=1), [FULL_RUN]]
    todo, done = [], 0
    for ckpt in checkpoints:
        digest = digests[str(ckpt["step"])]
        status = CheckpointShards(store, ckpt["step"])
        for chain in range(config.num_chains):
            for group in groups:
                if status.is_complete(group, chain):
                    done += 1
                    continue
                todo.append(
                    {
                        "store": store,
                        "store_id": store_id,
                        "step": ckpt["step"],
                        "checkpoint_path": ckpt.get("path"),
                        "checkpoint_digest": digest,
                        "workload": workload,
                        "sampler": sampler,
                        "components": group,
                        "chain": chain,
                        "threads": threads,
                    }
                )
    return todo, done


@flow(name="susceptibilities")
def susceptibilities(params: SusceptibilityParameters) -> dict:
    """Estimate χ at every checkpoint into the Zarr store ``params.store`` (fields:
    :class:`flows.parameters.SusceptibilityParameters`).

    Returns a summary: shards computed, shards found complete, χ statistics per checkpoint.
    """
    store, workload, checkpoints, sampler = (
        params.store,
        params.workload,
        params.checkpoints,
        params.sampler,
    )
    logger = get_run_logger()
    digests = {str(c["step"]): file_digest(c.get("path")) for c in checkpoints}
    # A model workload's token or batch file is data too: a changed file is refused like a
    # changed checkpoint (corpus settings are keyed by the workload itself).
    data_digests = {k: file_digest(workload[k]) for k in DATA_FILE_KEYS if workload.get(k)}
    info = prepare_store(
        store,
        workload,
        sampler,
        checkpoints,
        {
            "checkpoint_digests": json.dumps(digests, sort_keys=True),
            "data_digests": json.dumps(data_digests, sort_keys=True),
        },
    )
    todo, done = plan_shards(
        store,
        info["store_id"],
        workload,
        checkpoints,
        digests,
        sampler,
        params.max_lanes,
        params.threads_per_worker,
    )
    logger.info("%d shards to compute, %d already complete in the store", len(todo), done)
    results: list[dict] = []
    if todo:
        runner = make_task_runner(params.dask_address, params.n_workers, params.threads_per_worker)
        results = run_shards.with_options(task_runner=runner)(
            todo, use_gpu=cluster_has_gpus(params.dask_address)
        )
    computed = sum(r["status"] == "computed" for r in results)
    summaries = [assemble(store, c["step"]) for c in checkpoints]
    return {
        "store": store,
        "computed": computed,
        "already_complete": done + len(results) - computed,
        "checkpoints": summaries,
    }
