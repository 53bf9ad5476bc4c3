"""How flows run: the Dask task runner, on a local loopback cluster or an existing one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dask
import torch
from prefect_dask import DaskTaskRunner

from patterning_core.model.checkpoints import file_sha256

# glibc's defaults (and Dask's pre-spawn MALLOC_TRIM_THRESHOLD_=65536 even more) hand large
# buffers back to the OS after every step and fault them back in on the next: shards ran
# 2× slower per SGLD step under Dask's setting (benchmarks/results/kernels.md).
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
    "MALLOC_TOP_PAD_": str(64 * 1024 * 1024),
}


def worker_environment() -> dict[str, str]:
    """Variables a worker process needs before it starts (glibc reads them at start-up): the
    allocator settings, unless the environment already sets them."""
    return {k: os.environ.get(k, v) for k, v in ALLOCATOR_ENV.items()}


def use_worker_environment() -> None:
    """Make Dask nannies started from this process set ``worker_environment()`` before
    spawning their workers (``distributed.nanny.pre-spawn-environ``)."""
    key = "distributed.nanny.pre-spawn-environ"
    dask.config.set({key: {**dask.config.get(key, {}), **worker_environment()}})


def local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_task_runner(
    dask_address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1
) -> DaskTaskRunner:
    """A ``DaskTaskRunner``: on ``dask_address`` if given, else a local cluster of
    ``n_workers`` processes listening on 127.0.0.1 only (HTTP and dashboard on a random
    loopback port). Workers on a machine with GPUs advertise them as the Dask resource
    ``GPU``; local workers start with the allocator settings of ``worker_environment()``."""
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    use_worker_environment()
    kwargs: dict = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }
    gpus = local_gpus()
    if gpus:
        kwargs["resources"] = {"GPU": max(1, gpus // n_workers)}
    return DaskTaskRunner(cluster_kwargs=kwargs)


def cluster_has_gpus(dask_address: str | None) -> bool:
    """Whether shards should ask for a GPU: the local machine's, or those the workers of
    the cluster at ``dask_address`` advertise as the resource ``GPU``."""
    if not dask_address:
        return local_gpus() > 0
    from distributed import Client

    with Client(dask_address, timeout=30) as client:
        workers = client.scheduler_info()["workers"].values()
        return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)


@contextlib.contextmanager
def shard_resources(use_gpu: bool) -> Iterator[None]:
    """Ask Dask for one GPU per shard when the workers advertise GPUs."""
    if use_gpu:
        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield


def file_digest(path: str | Path | None) -> str:
    """SHA-256 of a file's bytes (``"none"`` for no file): cache keys follow content."""
    return "none" if path is None else file_sha256(path)
