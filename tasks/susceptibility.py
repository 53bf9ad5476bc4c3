"""Prefect tasks for χ: prepare the store, compute one shard, assemble a checkpoint.

A shard is (checkpoint, component group, chain), or (checkpoint, full run, chain). Tasks
exchange paths, keys and small dicts; tensors stay inside the task. The store's own
completion records (checksummed) decide what is done: a shard already complete in the
store is never recomputed, and a cache record never stands in for data that is gone
(cache keys include the store's identity, which changes when a store is recreated).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import torch
from prefect import get_run_logger, task

from patterning_core.estimators.susceptibility import sample_susceptibility_stats
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import (
    assemble_chi,
    completed,
    create_store,
    open_chi,
    write_shard,
)
from patterning_core.store.workloads import build_workload
from tasks.caching import expensive_task_policy, result_storage

FULL_RUN = "__full__"


def code_version() -> str:
    """The package version, with the git commit when run from a checkout."""
    described = f"patterning {version('patterning')}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        if commit.returncode == 0:
            described += f" ({commit.stdout.strip()})"
    except (OSError, subprocess.SubprocessError):
        pass
    return described


def pick_device() -> str:
    """The worker's accelerator if it has one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@task(name="prepare-chi-store")
def prepare_store(
    store: str,
    workload: dict,
    sampler: dict,
    checkpoints: list[dict],
    extra_attrs: dict | None = None,
) -> dict:
    """Create the χ store (or reopen a compatible one); return its identity and layout."""
    config = SamplerConfig.from_dict(sampler)
    first = checkpoints[0]
    work = build_workload(workload, first.get("path"))
    attrs = {
        "sampler_config": config.to_json(),
        "n_beta": config.n_beta,
        "store_id": uuid.uuid4().hex,
        "workload": json.dumps(workload, sort_keys=True),
        "code_version": code_version(),
        **(extra_attrs or {}),
    }
    created = create_store(
        store,
        checkpoints=[c["step"] for c in checkpoints],
        components=list(work.components),
        num_chains=config.num_chains,
        num_draws=config.num_draws,
        unit_coords=work.unit_coords,
        attrs=attrs,
    )
    ds = open_chi(store)
    get_run_logger().info("%s χ store %s", "created" if created else "resuming", store)
    return {"store_id": ds.attrs["store_id"], "components": list(work.components)}


class CheckpointShards:
    """Which shards of one checkpoint are complete in the store (checksums verified once)."""

    def __init__(self, store: str, step: int):
        ds = open_chi(store)
        self.state = completed(store, step, verify=True)
        self.chains = [int(c) for c in ds.chain.values]
        self.names = [str(c) for c in ds.component.values]

    def is_complete(self, components: list[str], chain: int) -> bool:
        k = self.chains.index(chain)
        if components == [FULL_RUN]:
            return bool(self.state["full"][k])
        return all(bool(self.state["restricted"][self.names.index(c), k]) for c in components)


def shard_is_complete(store: str, step: int, components: list[str], chain: int) -> bool:
    return CheckpointShards(store, step).is_complete(components, chain)


@task(
    name="susceptibility-shard",
    cache_policy=expensive_task_policy(),
    result_storage=result_storage(),
    persist_result=True,
    result_serializer="json",  # never pickle: cached results are read back from disk
)
def susceptibility_shard(
    store: str,
    store_id: str,
    step: int,
    checkpoint_path: str | None,
    checkpoint_digest: str,
    workload: dict,
    sampler: dict,
    components: list[str],
    chain: int,
    threads: int = 1,
) -> dict:
    """Sample one shard and write its statistics into the store; return a small summary."""
    logger = get_run_logger()
    label = (
        f"checkpoint {step}, {'full run' if components == [FULL_RUN] else components}, "
        f"chain {chain}"
    )
    if shard_is_complete(store, step, components, chain):
        logger.info("%s: already complete in the store", label)
        return {"status": "in-store", "step": step, "components": components, "chain": chain}
    torch.set_num_threads(threads)
    device = pick_device()
    started = time.perf_counter()
    work = build_workload(workload, checkpoint_path).to(device)
    full = components == [FULL_RUN]
    stats = sample_susceptibility_stats(
        work.loss_fn,
        work.params,
        work.data,
        work.probes,
        work.components,
        SamplerConfig.from_dict(sampler),
        component_names=[] if full else components,
        include_full=full,
        chain_ids=[chain],
        progress=False,
    )
    write_shard(store, step, stats)
    seconds = time.perf_counter() - started
    logger.info("%s: computed on %s (%s) in %.1f s", label, socket.gethostname(), device, seconds)
    return {
        "status": "computed",
        "step": step,
        "components": components,
        "chain": chain,
        "seconds": seconds,
        "device": device,
    }


@task(name="assemble-chi")
def assemble(store: str, step: int) -> dict:
    """Turn a checkpoint's verified statistics into χ; return summary numbers."""
    chi = assemble_chi(store, step)
    get_run_logger().info("checkpoint %d: χ assembled (%s)", step, dict(chi.sizes))
    return {
        "step": step,
        "mean": float(chi.mean()),
        "std": float(chi.std()),
        "min": float(chi.min()),
        "max": float(chi.max()),
    }
