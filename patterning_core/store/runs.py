"""Several χ stores as one Dataset with a ``run`` dimension: a baseline against retrained
models, or seeds against each other.

χ is compared unit by unit, so the runs must have been computed on the same probe units
(the same tokens at the same places); they may differ in checkpoints and components,
which are joined (NaN where a run has none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import xarray as xr

from patterning_core.store.chi_store import StoreError, open_chi, store_summary

# Unit coordinates that say which token a unit is; the others (token_text, pattern_class)
# are labels derived from it and are compared after these.
IDENTITY_COORDS = ("sequence", "position", "token_id")


def open_runs(
    stores: Sequence[str | Path],
    *,
    runs: Sequence[str] | None = None,
    use_dask: bool = True,
) -> xr.Dataset:
    """χ of several stores in one Dataset: ``chi`` [run, checkpoint, component, unit],
    ``init_loss`` [run, checkpoint] and the coordinate ``chi_complete`` [run, checkpoint].

    ``runs`` labels the stores (default: see :func:`run_labels`); the coordinate ``store``
    [run] holds their paths and ``attrs["runs"]`` (JSON) each store's own attributes
    (sampler settings, code version). Coordinates are in memory, χ lazy, as in
    :func:`~patterning_core.store.chi_store.open_chi`.

    Alignment: the probe units must be the same in every store (same number of units and
    equal unit coordinates ``sequence``, ``position``, ``token_id``, then ``token_text``,
    ``pattern_class``), else ``StoreError`` names the coordinate that differs, at how
    many units, and the first such unit. Components are matched by name (any order; the
    first store's order, then names only later stores have). Checkpoints and components
    are outer-joined: a run without a checkpoint or component has NaN χ there and
    ``chi_complete`` False. The per-chain statistics are not included (open one store
    alone for them).
    """
    stores = list(stores)
    if not stores:
        raise ValueError("open_runs needs at least one store.")
    opened = [open_chi(s, use_dask=use_dask) for s in stores]
    labels = run_labels(stores, runs, [ds.attrs for ds in opened])
    unit_names = check_same_units(opened, labels)

    components = list(dict.fromkeys(str(c) for ds in opened for c in ds.component.values))
    checkpoints = sorted({int(c) for ds in opened for c in ds.checkpoint.values})
    parts = []
    for ds in opened:
        part = ds[["chi", "init_loss"]].reset_coords("chi_complete").drop_vars(unit_names)
        part = part.assign_coords(component=[str(c) for c in part.component.values])
        parts.append(
            part.reindex(
                checkpoint=checkpoints,
                component=components,
                fill_value={"chi": np.nan, "init_loss": np.nan, "chi_complete": False},
            )
        )
    combined = xr.concat(parts, dim="run", join="exact", coords="minimal", compat="override")
    combined = combined.set_coords("chi_complete").assign_coords(
        run=list(labels),
        store=("run", [str(s) for s in stores]),
        **{name: opened[0][name].variable for name in unit_names},
    )
    combined["chi"] = combined["chi"].transpose("run", "checkpoint", "component", "unit")
    first = opened[0].attrs
    combined.attrs = {
        "schema_version": first.get("schema_version"),
        "convention": first.get("convention"),
        "runs": json.dumps(
            {label: _jsonable(ds.attrs) for label, ds in zip(labels, opened, strict=True)}
        ),
    }
    return combined


def run_labels(
    stores: Sequence[str | Path],
    runs: Sequence[str] | None = None,
    attrs: Sequence[dict] | None = None,
) -> list[str]:
    """Labels of the runs: ``runs`` if given; else each store's ``run_name`` attribute if
    it has one, else its folder: the parent folder of a store named ``chi.zarr`` (the
    pipeline writes ``<out>/chi.zarr``, ``<out>`` being ``demo`` or a settings digest),
    the store's own name without ``.zarr`` otherwise. Labels that would repeat are the
    full store paths instead."""
    if runs is not None:
        labels = [str(r) for r in runs]
        if len(labels) != len(stores):
            raise ValueError(f"{len(labels)} run labels for {len(stores)} stores.")
        if len(set(labels)) != len(labels):
            raise ValueError(f"run labels repeat: {labels}.")
        return labels
    attrs = attrs if attrs is not None else [{} for _ in stores]
    labels = [_default_label(s, a) for s, a in zip(stores, attrs, strict=True)]
    if len(set(labels)) != len(labels):
        labels = [str(s) for s in stores]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same store is given twice: {labels}.")
    return labels


def _default_label(store: str | Path, attrs: dict) -> str:
    if attrs.get("run_name"):
        return str(attrs["run_name"])
    path = PurePosixPath(str(store).split("://", 1)[-1].rstrip("/"))
    if path.name == "chi.zarr" and path.parent.name:
        return path.parent.name
    return path.name.removesuffix(".zarr") or str(store)


def check_same_units(opened: Sequence[xr.Dataset], labels: Sequence[str]) -> list[str]:
    """The unit coordinate names, after checking that every run has the first's probe
    units; ``StoreError`` naming the difference otherwise."""
    first, base = opened[0], labels[0]
    names = _unit_coord_names(first)
    advice = (
        "χ is compared unit by unit, so the runs need the same probe tokens: compute χ of "
        "every run with the same workload (data, probe_seqs). To compare runs on different "
        "tokens, open each store alone and compare aggregates, e.g. "
        'chi.groupby("pattern_class").mean("unit").'
    )
    n_units = first.sizes["unit"]
    for ds, label in zip(opened[1:], labels[1:], strict=True):
        if ds.sizes["unit"] != n_units:
            raise StoreError(
                f"runs {base!r} and {label!r} have different probe units: {n_units} units "
                f"against {ds.sizes['unit']}. {advice}"
            )
        other = _unit_coord_names(ds)
        if set(other) != set(names):
            only_first = sorted(set(names) - set(other))
            only_other = sorted(set(other) - set(names))
            raise StoreError(
                f"runs {base!r} and {label!r} label their units differently: unit "
                f"coordinates {only_first} only in {base!r}, {only_other} only in {label!r}. "
                "Stores written by different versions of the workload cannot be aligned "
                "unit by unit; recompute one of them with the other's settings."
            )
        for name in names:
            a, b = np.asarray(first[name].values), np.asarray(ds[name].values)
            differs = np.asarray(a != b, dtype=bool)
            if differs.any():
                i = int(np.flatnonzero(differs)[0])
                raise StoreError(
                    f"runs {base!r} and {label!r} were computed on different probe units: "
                    f"{name} differs at {int(differs.sum())} of {n_units} units (first at "
                    f"unit {i}: {a[i]!r} against {b[i]!r}). {advice}"
                )
    return names


def _unit_coord_names(ds: xr.Dataset) -> list[str]:
    found = [c for c in ds.coords if ds[c].dims == ("unit",) and c != "unit"]
    return [c for c in IDENTITY_COORDS if c in found] + sorted(
        c for c in found if c not in IDENTITY_COORDS
    )


def _jsonable(attrs: dict) -> dict:
    return {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in attrs.items()}


def runs_summary(stores: Sequence[str | Path], runs: Sequence[str] | None = None) -> str:
    """The summary of every store, then how their χ compare where both are complete:
    per checkpoint, each run's χ mean and its correlation with the first run's over
    every (component, unit); or why they cannot be compared unit by unit."""
    parts = [store_summary(s) for s in stores]
    try:
        ds = open_runs(stores, runs=runs, use_dask=False)
    except StoreError as err:
        return "\n".join([*parts, f"runs not compared: {err}"])
    labels = [str(r) for r in ds.run.values]
    lines = [
        f"{len(labels)} runs {labels}: {ds.sizes['unit']} common probe units, "
        f"{ds.sizes['component']} components"
    ]
    base = labels[0]
    for ckpt in ds.checkpoint.values:
        at = ds.sel(checkpoint=ckpt)
        cells = []
        for label in labels:
            if not bool(at["chi_complete"].sel(run=label)):
                cells.append(f"{label}: χ not assembled")
                continue
            chi = at["chi"].sel(run=label).values
            cell = f"{label}: χ mean {np.nanmean(chi):+.3e}"
            if label != base and bool(at["chi_complete"].sel(run=base)):
                ref = at["chi"].sel(run=base).values
                both = np.isfinite(chi) & np.isfinite(ref)
                if both.sum() > 1:
                    r = np.corrcoef(chi[both], ref[both])[0, 1]
                    cell += f", correlation with {base} {r:+.3f}"
            cells.append(cell)
        lines.append(f"  checkpoint {int(ckpt)}: " + "; ".join(cells))
    return "\n".join([*parts, *lines])


def one_or_runs(
    paths: Sequence[str | Path], runs: Sequence[str] | None = None
) -> str | Path | list[str | Path]:
    """Command-line stores: one path without labels is that store alone; several (or
    labelled ones) are a list, compared as runs."""
    paths = list(paths)
    return paths[0] if len(paths) == 1 and not runs else paths


def summary(stores: str | Path | Sequence[str | Path], runs: Sequence[str] | None = None) -> str:
    """``store_summary`` of one store, ``runs_summary`` of a list."""
    if isinstance(stores, str | os.PathLike):
        return store_summary(stores)
    return runs_summary(stores, runs)
