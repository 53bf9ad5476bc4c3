"""Prefect task: decompose one checkpoint's χ, save the modes and their plots."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from patterning_core.estimators.decomposition import decompose, top_units
from patterning_core.report.chi_plots import plot_chi_heatmap, plot_modes
from patterning_core.store.chi_store import open_chi, plain_string_coords


@task(name="decompose-chi")
def decompose_checkpoint(
    store: str, step: int, out_dir: str, by: str = "component", n_modes: int = 8
) -> dict:
    """Write ``modes_{step}.nc`` and two PNGs under ``out_dir``; return a summary."""
    chi = plain_string_coords(open_chi(store)["chi"].sel(checkpoint=step).load())
    modes = decompose(chi, by=by, n_modes=n_modes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes_path = out / f"modes_step{step}.nc"
    plain_string_coords(modes).to_netcdf(modes_path)
    heatmap = plot_chi_heatmap(
        chi, out / f"chi_step{step}.png", title=f"χ at step {step}, standardized per component"
    )
    modes_png = plot_modes(modes, out / f"modes_step{step}.png", title=f"modes of χ at step {step}")
    ev = [float(v) for v in modes["explained_variance"].values]
    get_run_logger().info(
        "step %d: explained variance of PC1..3 %s", step, [round(v, 3) for v in ev[:3]]
    )
    loadings = modes["component_loading"]
    return {
        "step": step,
        "explained_variance": ev,
        "component_loadings": {
            int(m): dict(
                zip(
                    map(str, loadings.component.values),
                    map(float, loadings.sel(mode=m).values),
                    strict=True,
                )
            )
            for m in loadings.mode.values[:3]
        },
        "top_units": {int(m): top_units(modes, int(m), k=8) for m in modes.mode.values[:3]},
        "files": {"modes": str(modes_path), "chi_png": str(heatmap), "modes_png": str(modes_png)},
    }
