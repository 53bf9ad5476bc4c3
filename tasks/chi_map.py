"""Prefect tasks of the χ map: one checkpoint's readout, the map of the store, its page.

The readouts live in the χ store (``patterning_core.store.chi_map``): a checkpoint's part
is named by the settings and the record of the χ it was computed from, so the store itself
says what is done, and a cache record never stands in for a part that is gone (the map
recomputes a missing part).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from patterning_core.estimators.chi_map import ChiMapSettings
from patterning_core.report.chi_map import render_chi_map
from patterning_core.store.chi_map import compute_checkpoint_map, open_chi_map, write_chi_map
from tasks.caching import expensive_task_policy, result_storage


@task(
    name="chi-map-checkpoint",
    cache_policy=expensive_task_policy(),
    result_storage=result_storage(),
    persist_result=True,
    result_serializer="json",  # never pickle: cached results are read back from disk
)
def chi_map_checkpoint(
    store: str, store_id: str, step: int, chi_record: int, settings: dict
) -> dict:
    """Readout of one checkpoint (modes, spectra, PCA and UMAP of its tokens) into the
    store's ``map_parts``; cached on the store, the checkpoint, its χ and the settings."""
    info = compute_checkpoint_map(store, step, ChiMapSettings.from_dict(settings))
    get_run_logger().info(
        "checkpoint %d: readout %s (%.1f s)", step, info["status"], info["seconds"]
    )
    return info


@task(name="chi-map-assemble")
def chi_map_assemble(
    store: str, settings: dict, steps: list[int], reference: int | None = None
) -> dict:
    """Stack the checkpoints' readouts, match their modes, write the store's ``map``."""
    ds = write_chi_map(store, ChiMapSettings.from_dict(settings), steps, reference)
    get_run_logger().info(
        "map of %s: %d checkpoints, %d modes, reference step %s",
        store,
        ds.sizes["checkpoint"],
        ds.sizes["mode"],
        ds.attrs["reference_checkpoint"],
    )
    return {
        "checkpoints": [int(s) for s in ds.checkpoint.values],
        "reference": int(ds.attrs["reference_checkpoint"]),
        "explained_variance": {
            str(int(s)): [float(v) for v in ds["explained_variance"].sel(checkpoint=s).values]
            for s in ds.checkpoint.values
        },
    }


@task(name="chi-map-report")
def chi_map_report(store: str, out_dir: str, color_by: list[str]) -> dict:
    """The page of the store's map (PNGs and ``index.md`` in ``out_dir``), also published
    as a Markdown artifact."""
    ds = open_chi_map(store)
    rendered = render_chi_map(ds, out_dir, color_by, title=f"χ map of {Path(store).name}")
    create_markdown_artifact(
        key="chi-map",
        markdown=f"Page: `{rendered['page']}`\n\n{rendered['markdown']}",
        description=f"χ map of {store}",
    )
    return {"page": rendered["page"], "figures": rendered["figures"]}
