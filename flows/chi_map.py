"""The ``chi-map`` flow: readouts of a χ store, written back next to χ, and their page.

One task per checkpoint (its modes, per-layer spectra, PCA and UMAP of its tokens; cached
on the store, the checkpoint's χ and the settings), then the map (modes matched across
checkpoints) and the page, published as a Markdown artifact. ``map_here`` does the same
without Prefect (``patterning chi map``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import wait

from flows.parameters import ChiMapParameters
from flows.runtime import make_task_runner
from patterning_core.report.chi_map import render_chi_map
from patterning_core.store.chi_map import chi_records, complete_checkpoints, write_chi_map
from patterning_core.store.chi_store import open_chi
from tasks.chi_map import chi_map_assemble, chi_map_checkpoint, chi_map_report


@flow(name="chi-map-checkpoints")
def map_checkpoints(jobs: list[dict]) -> list[dict]:
    """Submit every checkpoint's readout; wait for all (a failure does not stop the others)."""
    futures = [chi_map_checkpoint.submit(**job) for job in jobs]
    wait(futures)
    return [_found(f.state, f.result()) for f in futures]


def _found(state, result: dict) -> dict:
    """A cache hit returns the summary of the run that computed the readout: report it as
    found, not computed."""
    return {**result, "status": "cached"} if state.name == "Cached" else result


def _steps(p: ChiMapParameters) -> list[int]:
    return sorted(p.checkpoints if p.checkpoints is not None else complete_checkpoints(p.store))


@flow(name="chi-map")
def chi_map(params: ChiMapParameters) -> dict:
    """Map the χ store ``params.store`` (fields: :class:`flows.parameters.ChiMapParameters`):
    the readouts into its ``map`` group, the page into ``params.out_dir``.

    Returns ``{"store", "page", "checkpoints", "reference", "computed", "figures"}``.
    """
    p = params
    settings = p.settings().to_dict()
    steps = _steps(p)
    records = chi_records(p.store)
    store_id = str(open_chi(p.store).attrs.get("store_id", Path(p.store).resolve()))
    jobs = [
        {
            "store": p.store,
            "store_id": store_id,
            "step": step,
            "chi_record": records[step],
            "settings": settings,
        }
        for step in steps
    ]
    get_run_logger().info("χ map of %s: %d checkpoints", p.store, len(jobs))
    if p.dask_address or p.n_workers > 1:
        runner = make_task_runner(p.dask_address, p.n_workers, 1)
        parts = map_checkpoints.with_options(task_runner=runner)(jobs)
    else:
        states = [chi_map_checkpoint(**job, return_state=True) for job in jobs]
        parts = [_found(state, state.result()) for state in states]
    summary = chi_map_assemble(p.store, settings, steps, p.reference)
    report = chi_map_report(p.store, p.out_dir, p.color_by)
    return {
        "store": p.store,
        "page": report["page"],
        "figures": report["figures"],
        "checkpoints": summary["checkpoints"],
        "reference": summary["reference"],
        "computed": sum(part["status"] == "computed" for part in parts),
    }


def map_here(params: ChiMapParameters) -> dict:
    """The flow's work in this process, without Prefect: the map into the store, the page
    into ``params.out_dir``. Returns ``{"store", "page", "checkpoints", "reference"}``."""
    ds = write_chi_map(params.store, params.settings(), _steps(params), params.reference)
    rendered = render_chi_map(
        ds, params.out_dir, params.color_by, title=f"χ map of {Path(params.store).name}"
    )
    return {
        "store": params.store,
        "page": rendered["page"],
        "checkpoints": [int(s) for s in ds.checkpoint.values],
        "reference": int(ds.attrs["reference_checkpoint"]),
    }
