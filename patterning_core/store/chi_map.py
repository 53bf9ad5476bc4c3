"""The map of a χ store, written back next to χ (readouts: ``estimators.chi_map``).

Layout inside the store (Zarr format 3 groups beside the root's arrays, which
:func:`chi_store.open_chi` does not read):

- ``map_parts/step{S}-{settings digest}-{χ record}``: the readout of one checkpoint
  (``estimators.chi_map.checkpoint_readout``), named by what it was computed from, so a
  part is reused only for the same settings and the same χ;
- ``map``: every checkpoint's readout stacked along ``checkpoint``, its modes matched over
  training, and the store's unit coordinates (token text, pattern class, position, …):

  - ``explained_variance``, ``singular_value`` [checkpoint, mode];
  - ``component_loading`` [checkpoint, mode, component] (u_k), ``unit_loading``
    [checkpoint, mode, unit] (v_k);
  - ``spectrum`` [checkpoint, rank] (the full explained-variance spectrum, sums to 1);
  - ``layer_explained_variance`` [checkpoint, layer, layer_mode];
  - ``pca``, ``umap`` [checkpoint, unit, axis]: token embeddings (``umap`` only if asked);
  - ``matched_mode`` [checkpoint, track] (the checkpoint's own mode number), ``matched_sign``
    (±1), ``match_cosine`` (|cos| with the neighbouring checkpoint's tracked mode),
    ``tracked_loading`` [checkpoint, track, component], ``tracked_explained_variance``
    [checkpoint, track]: tracked mode j is mode j of the reference checkpoint (attribute
    ``reference_checkpoint``).

A group is written whole or not at all: on a local store it is written beside its place
and renamed into it, and everywhere its attribute ``complete`` is set last; readers
(:func:`open_chi_map`) refuse a group without it. :func:`open_chi_map` adds the coordinate
``map_current`` [checkpoint]: False where χ was reassembled since the map was computed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from patterning_core.estimators.chi_map import ChiMapSettings, checkpoint_readout, match_modes
from patterning_core.store.chi_store import (
    StoreError,
    _checksum,
    _disk_full_is_clear,
    _group,
    _is_local,
    _path,
    open_chi,
)

MAP_GROUP = "map"
PARTS_GROUP = "map_parts"


def chi_records(store: str | Path) -> dict[int, int]:
    """``{step: χ record}`` of every checkpoint: ``chi_done`` (1 + CRC32 of χ; 0 while not
    assembled). A readout is computed from, and named by, the record of its χ."""
    group = _group(store)
    steps = [int(s) for s in np.asarray(group["checkpoint"][:])]
    if "chi_done" in group:
        done = np.asarray(group["chi_done"][:])
    else:  # stores from before the record: the checksum of what is there
        done = np.array([_checksum(np.asarray(group["chi"][i])) for i in range(len(steps))])
        done[~np.isfinite(np.asarray(group["chi"][:, 0, 0]))] = 0
    return {s: int(r) for s, r in zip(steps, done, strict=True)}


def complete_checkpoints(store: str | Path) -> list[int]:
    """Steps whose χ is assembled (the checkpoints a map can read)."""
    return [s for s, record in chi_records(store).items() if record != 0]


def read_checkpoint_chi(store: str | Path, step: int) -> tuple[xr.DataArray, int]:
    """χ ``(component, unit)`` of one assembled checkpoint and its record; ``StoreError`` if
    it is not assembled or is being rewritten while read."""
    before = chi_records(store)
    if step not in before:
        raise StoreError(f"checkpoint {step} is not in χ store {store} ({sorted(before)}).")
    if before[step] == 0:
        raise StoreError(
            f"χ of checkpoint {step} in {store} is not assembled: run the susceptibilities "
            "flow to finish it (or leave the checkpoint out)."
        )
    group = _group(store)  # one chunk of χ, whatever else the store holds
    ci = [int(s) for s in np.asarray(group["checkpoint"][:])].index(int(step))
    chi = xr.DataArray(
        np.asarray(group["chi"][ci], dtype=np.float64),
        dims=("component", "unit"),
        coords={
            "component": [str(c) for c in np.asarray(group["component"][:])],
            "unit": np.asarray(group["unit"][:]),
        },
    )
    if chi_records(store)[step] != before[step]:
        raise StoreError(f"χ of checkpoint {step} in {store} changed while being read; retry.")
    return chi, before[step]


def part_name(step: int, settings: ChiMapSettings, record: int) -> str:
    return f"step{int(step)}-{settings.digest()}-{int(record):x}"


def _open_group(store: str | Path, name: str) -> xr.Dataset | None:
    """The complete group ``name`` of the store as a Dataset, or None if absent or not
    complete."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(
                _path(store), group=name, consolidated=False, zarr_format=3, chunks=None
            )
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    return ds if ds.attrs.get("complete") else None


def _write_group(store: str | Path, name: str, ds: xr.Dataset) -> None:
    """Write ``ds`` as the group ``name`` of the store, whole or not at all (see the module
    docstring); an existing group of that name is replaced."""
    ds = ds.assign_attrs(complete=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 string dtype has no stable spec yet
        if not _is_local(store):  # object stores: no rename; the flag is written last
            ds.to_zarr(_path(store), group=name, mode="w", zarr_format=3, consolidated=False)
            zarr.open_group(_path(store), path=name, mode="r+", zarr_format=3).attrs["complete"] = (
                True
            )
            return
        root = Path(_path(store).removeprefix("file://"))
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.writing-{uuid.uuid4().hex[:8]}")
        try:
            ds.to_zarr(staging, mode="w-", zarr_format=3, consolidated=False)
            zarr.open_group(staging, mode="r+", zarr_format=3).attrs["complete"] = True
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            if target.exists():
                os.rename(target, old)
            try:
                os.rename(staging, target)
            except OSError:  # another writer put its complete group there first: keep it
                if _open_group(store, name) is None:
                    raise
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _ensure_parts_group(store: str | Path) -> None:
    group = _group(store, mode="r+")
    if PARTS_GROUP not in group:
        group.create_group(PARTS_GROUP)


def compute_checkpoint_map(store: str | Path, step: int, settings: ChiMapSettings) -> dict:
    """The readout of one checkpoint, written to ``map_parts`` unless a part computed with
    the same settings from the same χ is there. Returns ``{"step", "part", "status"
    ("computed" | "in-store"), "seconds"}``."""
    started = time.perf_counter()
    chi, record = read_checkpoint_chi(store, step)
    name = part_name(step, settings, record)
    path = f"{PARTS_GROUP}/{name}"
    if _open_group(store, path) is not None:
        return {"step": int(step), "part": name, "status": "in-store", "seconds": 0.0}
    readout = checkpoint_readout(chi, settings)
    readout.attrs.update(step=int(step), chi_record=record)
    with _disk_full_is_clear(store, f"the map of checkpoint {int(step)}"):
        _ensure_parts_group(store)
        _write_group(store, path, readout)
    seconds = time.perf_counter() - started
    return {"step": int(step), "part": name, "status": "computed", "seconds": seconds}


def write_chi_map(
    store: str | Path,
    settings: ChiMapSettings,
    steps: Sequence[int] | None = None,
    reference: int | None = None,
) -> xr.Dataset:
    """The map of the store: every checkpoint's readout (computed here where its part is
    missing), modes matched across checkpoints, written to the group ``map`` and returned.

    ``steps``: checkpoints to map (default: every assembled one), in training order;
    ``reference``: the step whose modes name the tracked modes (default: the last).
    """
    steps = sorted(int(s) for s in (steps if steps is not None else complete_checkpoints(store)))
    if not steps:
        raise StoreError(f"χ store {store} has no assembled checkpoint to map.")
    if reference is not None and int(reference) not in steps:
        raise StoreError(f"reference checkpoint {reference} is not among the mapped {steps}.")
    parts = []
    for step in steps:
        info = compute_checkpoint_map(store, step, settings)  # reads the part if it is there
        part = _open_group(store, f"{PARTS_GROUP}/{info['part']}")
        if part is None:
            raise StoreError(f"the map part of checkpoint {step} vanished while being read.")
        parts.append(part.load())
    records = {str(p.attrs["step"]): int(p.attrs["chi_record"]) for p in parts}
    stacked = xr.concat(
        [p.drop_attrs() for p in parts], dim="checkpoint", join="exact", coords="minimal"
    ).assign_coords(checkpoint=steps)
    ref = steps.index(int(reference)) if reference is not None else len(steps) - 1
    matched = match_modes(stacked["component_loading"].values, reference=ref)
    modes = stacked["mode"].values
    track = xr.DataArray(modes, dims=("track",))
    ev = stacked["explained_variance"].values
    stacked = stacked.assign(
        matched_mode=(("checkpoint", "track"), modes[matched["index"]]),
        matched_sign=(("checkpoint", "track"), matched["sign"]),
        match_cosine=(("checkpoint", "track"), matched["cosine"]),
        tracked_loading=(("checkpoint", "track", "component"), matched["loading"]),
        tracked_explained_variance=(
            ("checkpoint", "track"),
            np.take_along_axis(ev, matched["index"], axis=1),
        ),
    ).assign_coords(track=track)
    chi_ds = open_chi(store)
    unit_coords = {
        name: (("unit",), np.asarray(c.values))
        for name, c in chi_ds.coords.items()
        if c.dims == ("unit",) and name != "unit"
    }
    stacked = stacked.assign_coords(unit_coords)
    stacked.attrs = {
        "settings": json.dumps(settings.to_dict(), sort_keys=True),
        "settings_digest": settings.digest(),
        "reference_checkpoint": steps[ref],
        "chi_records": json.dumps(records, sort_keys=True),
        "store_id": str(chi_ds.attrs.get("store_id", "")),
        "convention": (
            "χ standardized per component (row centred over units, divided by its std); "
            "SVD z = U Σ Vᵀ; component_loading = u_k, unit_loading = v_k, sign: largest "
            "|component loading| > 0; pca = σ_k v_k (k = 1, 2); tracked mode j = mode j of "
            "the reference checkpoint, matched by Hungarian assignment on |cos| of component "
            "loadings between neighbouring checkpoints."
        ),
    }
    with _disk_full_is_clear(store, "the map"):
        _write_group(store, MAP_GROUP, stacked)
    return open_chi_map(store)


def open_chi_map(store: str | Path) -> xr.Dataset:
    """The map written by :func:`write_chi_map` (see the module docstring), read into
    memory, with the coordinate ``map_current`` [checkpoint]: whether χ of that checkpoint
    is still the χ the map was computed from. ``StoreError`` if the store has no complete
    map."""
    ds = _open_group(store, MAP_GROUP)
    if ds is None:
        _group(store)  # no store at all: StoreMissingError
        raise StoreError(
            f"χ store {store} has no map yet: run `patterning chi map {store} --out DIR`."
        )
    ds = ds.load()
    recorded = {int(k): v for k, v in json.loads(ds.attrs["chi_records"]).items()}
    now = chi_records(store)
    current = [now.get(int(s)) == recorded.get(int(s)) for s in ds.checkpoint.values]
    return ds.assign_coords(map_current=("checkpoint", np.array(current)))
