"""Export a selection of one χ store, or of several compared as runs, to CSV (long format)
or netCDF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from patterning_core.store.chi_store import open_chi, plain_string_coords

Stores = str | Path | Sequence[str | Path]


def select_chi(
    store: Stores,
    checkpoints: Sequence[int] | None = None,
    components: Sequence[str] | None = None,
    *,
    runs: Sequence[str] | None = None,
) -> xr.DataArray:
    """χ with its unit coordinates, restricted to the given checkpoints and components.

    ``store`` is one store, or a list of stores compared as runs (a leading ``run``
    dimension labelled by ``runs``; see ``patterning_core.store.runs.open_runs``)."""
    chi = _open(store, runs)["chi"]
    if checkpoints:
        chi = chi.sel(checkpoint=list(checkpoints))
    if components:
        chi = chi.sel(component=list(components))
    return chi.load()


def export_chi(
    store: Stores,
    out: str | Path,
    fmt: str,
    checkpoints: Sequence[int] | None = None,
    components: Sequence[str] | None = None,
    *,
    runs: Sequence[str] | None = None,
) -> Path:
    """Write the selection to ``out`` as ``csv`` (one row per [run ×] checkpoint ×
    component × unit, with the unit coordinates as columns) or ``netcdf``. Returns the
    path."""
    if fmt not in ("csv", "netcdf"):
        raise ValueError(f"unknown export format {fmt!r}; use 'csv' or 'netcdf'.")
    chi = select_chi(store, checkpoints, components, runs=runs)
    out = Path(out)
    if fmt == "csv":
        chi.to_dataframe().reset_index().to_csv(out, index=False)
    else:
        ds = plain_string_coords(chi.to_dataset())
        ds.attrs = {
            k: v for k, v in _open(store, runs).attrs.items() if isinstance(v, str | int | float)
        }
        ds.to_netcdf(out)
    return out


def default_export_path(store: Stores, fmt: str) -> Path:
    """Beside the store: ``chi.zarr`` → ``chi.csv`` / ``chi.nc``; for several stores,
    ``chi-runs.csv`` / ``chi-runs.nc`` beside the first."""
    suffix = ".csv" if fmt == "csv" else ".nc"
    if isinstance(store, str | os.PathLike):
        return Path(store).with_suffix(suffix)
    return Path(next(iter(store))).with_name("chi-runs" + suffix)


def _open(store: Stores, runs: Sequence[str] | None) -> xr.Dataset:
    if isinstance(store, str | os.PathLike):
        return open_chi(store)
    return open_chi(list(store), runs=runs)
