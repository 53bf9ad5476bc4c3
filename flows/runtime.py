"""How flows run: the Dask task runner, on a local loopback cluster or an existing one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dask
import torch
from prefect_dask import DaskTaskRunner

from patterning_core.checkpoints import file_sha256


def local_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_task_runner(
    dask_address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1
) -> DaskTaskRunner:
    """A ``DaskTaskRunner``: on ``dask_address`` if given, else a local cluster of
    ``n_workers`` processes listening on 127.0.0.1 only (HTTP and dashboard on a random
    loopback port). Workers on a machine with GPUs advertise them as the Dask resource
    ``GPU``."""
    if dask_address:
        return DaskTaskRunner(address=dask_address)
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
