"""Export a selection of a χ store to CSV (long format) or netCDF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from patterning_core.store.chi_store import open_chi, plain_string_coords


def select_chi(
    store: str | Path,
    checkpoints: Sequence[int] | None = None,
    components: Sequence[str] | None = None,
) -> xr.DataArray:
    """χ with its unit coordinates, restricted to the given checkpoints and components."""
    chi = open_chi(store)["chi"]
    if checkpoints:
        chi = chi.sel(checkpoint=list(checkpoints))
    if components:
        chi = chi.sel(component=list(components))
    return chi.load()


def export_chi(
    store: str | Path,
    out: str | Path,
    fmt: str,
    checkpoints: Sequence[int] | None = None,
    components: Sequence[str] | None = None,
) -> Path:
    """Write the selection to ``out`` as ``csv`` (one row per checkpoint × component ×
    unit, with the unit coordinates as columns) or ``netcdf``. Returns the path."""
    chi = select_chi(store, checkpoints, components)
    out = Path(out)
    if fmt == "csv":
        chi.to_dataframe().reset_index().to_csv(out, index=False)
    elif fmt == "netcdf":
        ds = plain_string_coords(chi.to_dataset())
        ds.attrs = {
            k: v for k, v in open_chi(store).attrs.items() if isinstance(v, str | int | float)
        }
        ds.to_netcdf(out)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'csv' or 'netcdf'.")
    return out
