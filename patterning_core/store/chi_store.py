"""The χ store: one Zarr (format 3) group per run, read and written through xarray.

Layout (dimension names in brackets):

- coordinates ``checkpoint`` (training step), ``component`` (names), ``chain``, ``unit``,
  ``draw``, and per unit any of ``sequence``, ``position``, ``token_id``, ``token_text``,
  ``pattern_class``;
- streaming statistics of the restricted runs (see ``susceptibility.py``), one chunk per
  (checkpoint, component, chain), so every shard writes whole chunks:
  ``count, phi_mean, phi_m2`` [checkpoint, component, chain],
  ``probe_mean, probe_comoment`` [checkpoint, component, chain, unit],
  ``loss_trace`` [checkpoint, component, chain, draw];
- of the full run, one chunk per (checkpoint, chain): ``full_count, full_loss_mean``
  [checkpoint, chain], ``full_probe_mean`` [checkpoint, chain, unit],
  ``full_loss_trace`` [checkpoint, chain, draw];
- ``init_loss`` [checkpoint]: L_fix(w*) of each checkpoint;
- completion records written *after* a shard's data: ``shard_done`` [checkpoint,
  component, chain] and ``full_done`` [checkpoint, chain] hold 1 + a CRC32 of the shard's
  bytes (0 = not done). A record whose data no longer matches its checksum is not trusted;
- ``chi`` [checkpoint, component, unit], assembled from the statistics (NaN until then),
  one chunk per checkpoint; ``chi_done`` [checkpoint] holds 1 + a CRC32 of it, written
  after it (0 while a checkpoint's χ is not assembled or being rewritten).

Readers: :func:`open_chi` reads the coordinates into memory (they are what queries select
on) and keeps χ and the statistics lazy; it adds the coordinate ``chi_complete``
[checkpoint] and shows χ only where it is complete (NaN elsewhere), so a reader opening the
store while shards are being written sees either the previous complete χ or NaN with
``chi_complete`` False, never partial statistics (several stores at once:
``patterning_core.store.runs``); :func:`read_stats` and :func:`assemble_chi` name the shards that
are missing, and :func:`store_summary` counts them. Chunk writes are atomic (local
stores write a temporary file and rename it).

A full disk while writing (``ENOSPC``/``EDQUOT``) is a ``StoreError`` saying so: the
shards recorded complete are kept, the one being written stays incomplete and is
recomputed when the run is started again.

``attrs``: ``schema_version``, ``sampler_config`` (JSON), ``n_beta``, ``convention`` and
whatever the caller adds (code version, cache keys).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from patterning_core.estimators.susceptibility import (
    CHI_CONVENTION,
    chi_from_stats,
    restricted_chi_from_stats,
)

SCHEMA_VERSION = 1

_RESTRICTED = {
    "count": ("component", "chain"),
    "phi_mean": ("component", "chain"),
    "phi_m2": ("component", "chain"),
    "probe_mean": ("component", "chain", "unit"),
    "probe_comoment": ("component", "chain", "unit"),
    "loss_trace": ("component", "chain", "draw"),
}
_FULL = {
    "full_count": ("chain",),
    "full_loss_mean": ("chain",),
    "full_probe_mean": ("chain", "unit"),
    "full_loss_trace": ("chain", "draw"),
}


class StoreError(RuntimeError):
    """The store is missing, incompatible, or its contents cannot be trusted."""


class StoreMissingError(StoreError):
    """There is no χ store at the path."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def _disk_full_is_clear(store: str | Path, what: str) -> Iterator[None]:
    """Turn "no space left on device" (or over quota) while writing into a ``StoreError``
    that says what happened and what to do; other errors pass through unchanged."""
    try:
        yield
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        raise StoreError(
            f"disk full (no space left on the device or quota exceeded) while writing {what} "
            f"to χ store {store}. Free disk space (or write the run to a store on another "
            "disk) and run the same command again: completed shards are kept, and only "
            "the unfinished ones are recomputed."
        ) from err


def _path(store: str | Path) -> str:
    return str(store)


def _group(store: str | Path, mode: str = "r") -> zarr.Group:
    try:
        return zarr.open_group(_path(store), mode=mode, zarr_format=3)
    except FileNotFoundError as err:
        raise StoreMissingError(
            f"no χ store at {store}: create it first (or check the path)."
        ) from err


def create_store(
    store: str | Path,
    *,
    checkpoints: Sequence[int],
    components: Sequence[str],
    num_chains: int,
    num_draws: int,
    unit_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, object],
) -> bool:
    """Create the store, or check that an existing one has exactly this layout.

    Returns True if the store was created, False if a compatible one already existed (a
    resumed run). Raises ``StoreError`` if an existing store differs.
    """
    units = len(next(iter(unit_coords.values())))
    layout = {
        "checkpoint": list(map(int, checkpoints)),
        "component": list(components),
        "chain": list(range(num_chains)),
        "unit": units,
        "draw": num_draws,
    }
    existing = _open_if_present(store)
    if existing is not None:
        _check_same_layout(existing, layout, attrs, store)
        return False
    if not _is_local(store):  # object stores: no atomic rename; creators must not race
        with _disk_full_is_clear(store, "a new store"):
            _write_layout(store, layout, num_chains, num_draws, unit_coords, attrs)
        return True
    # Build beside the target and rename into place: readers and concurrent creators see
    # either no store or a complete one; the loser of a race opens the winner's store.
    target = Path(_path(store).removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        with _disk_full_is_clear(store, "a new store"):
            _write_layout(staging, layout, num_chains, num_draws, unit_coords, attrs)
        os.rename(staging, target)
    except OSError:
        if not target.exists():
            raise
        _check_same_layout(_open(store), layout, attrs, store)
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _is_local(store: str | Path) -> bool:
    text = _path(store)
    return "://" not in text or text.startswith("file://")


def _open_if_present(store: str | Path) -> xr.Dataset | None:
    """The existing store, or None if there is none (an incompatible one raises)."""
    try:
        return _open(store)
    except StoreMissingError:
        return None


def _write_layout(
    store: str | Path,
    layout: dict,
    num_chains: int,
    num_draws: int,
    unit_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, object],
) -> None:
    """Write coordinates, attributes and every (empty) array of a new store."""
    units = layout["unit"]
    coords: dict[str, object] = {
        "checkpoint": layout["checkpoint"],
        "component": layout["component"],
        "chain": layout["chain"],
        "unit": np.arange(units),
        "draw": np.arange(num_draws),
    }
    for name, values in unit_coords.items():
        values = np.asarray(values)
        if values.dtype.kind in "OUT":
            values = values.astype(object)
        coords[name] = ("unit", values)
    meta = {**dict(attrs), "schema_version": SCHEMA_VERSION, "convention": CHI_CONVENTION}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 string dtype has no stable spec yet
        xr.Dataset(coords=coords, attrs=meta).to_zarr(
            _path(store), mode="w-", zarr_format=3, consolidated=False
        )
    group = _group(store, mode="a")
    n_ckpt, n_comp = len(layout["checkpoint"]), len(layout["component"])
    sizes = {
        "checkpoint": n_ckpt,
        "component": n_comp,
        "chain": num_chains,
        "unit": units,
        "draw": num_draws,
    }

    def array(name: str, dims: tuple[str, ...], dtype: str, fill: float) -> None:
        shape = tuple(sizes[d] for d in dims)
        chunks = tuple(sizes[d] if d in ("unit", "draw") else 1 for d in dims)
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            dimension_names=list(dims),
        )

    for name, dims in _RESTRICTED.items():
        array(name, ("checkpoint", *dims), "f8", np.nan)
    for name, dims in _FULL.items():
        array(name, ("checkpoint", *dims), "f8", np.nan)
    array("init_loss", ("checkpoint",), "f8", np.nan)
    array("shard_done", ("checkpoint", "component", "chain"), "i8", 0)
    array("full_done", ("checkpoint", "chain"), "i8", 0)
    array("chi_done", ("checkpoint",), "i8", 0)
    group.create_array(
        "chi",
        shape=(n_ckpt, n_comp, units),
        chunks=(1, n_comp, units),
        dtype="f8",
        fill_value=np.nan,
        dimension_names=["checkpoint", "component", "unit"],
    )


def _check_schema(attrs: Mapping, store: str | Path) -> None:
    """Refuse a store written with another layout version (before reading or writing)."""
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        made_by = attrs.get("code_version")
        raise StoreError(
            f"χ store {store} has schema version {version!r}; this code reads and writes "
            f"version {SCHEMA_VERSION}. Write the run to a new store path, or read this one "
            "with the patterning version that wrote it" + (f" ({made_by})." if made_by else ".")
        )


def _check_same_layout(existing: xr.Dataset, layout: dict, attrs: Mapping, store) -> None:
    _check_schema(existing.attrs, store)
    found = {
        "checkpoint": [int(c) for c in existing.checkpoint.values],
        "component": [str(c) for c in existing.component.values],
        "chain": [int(c) for c in existing.chain.values],
        "unit": existing.sizes["unit"],
        "draw": existing.sizes["draw"],
    }
    for key, want in layout.items():
        if found[key] != want:
            raise StoreError(
                f"χ store {store} was created for a different run ({key}: {found[key]!r} vs "
                f"{want!r}); use a new path, or delete the store to start over."
            )
    if (
        "sampler_config" in attrs
        and existing.attrs.get("sampler_config") != attrs["sampler_config"]
    ):
        raise StoreError(f"χ store {store} was made with other sampler settings; use a new path.")
    changed = _changed_digests(existing.attrs, attrs, "checkpoint_digests")
    if changed:
        raise StoreError(
            f"the checkpoint files of steps {sorted(map(int, changed))} changed since χ store "
            f"{store} was computed from them (content digest differs): its χ would be stale. "
            "Restore the original checkpoints, or write to a new store path."
        )
    changed = _changed_digests(existing.attrs, attrs, "data_digests")
    if changed:
        raise StoreError(
            f"the data file(s) {sorted(changed)} changed since χ store {store} was computed "
            "from them (content digest differs): resuming would mix χ of two data sets. "
            "Restore the original files, or write to a new store path."
        )


def _changed_digests(old_attrs: Mapping, new_attrs: Mapping, key: str) -> list[str]:
    """Names whose content digest in the JSON attribute ``key`` differs between a store's
    attributes and the new run's (names missing on either side are not compared)."""
    if key not in old_attrs or key not in new_attrs:
        return []
    old, new = json.loads(str(old_attrs[key])), json.loads(str(new_attrs[key]))
    return [name for name in new if name in old and old[name] != new[name]]


def open_chi(
    store: str | Path | Sequence[str | Path],
    *,
    runs: Sequence[str] | None = None,
    use_dask: bool = True,
) -> xr.Dataset:
    """Open a χ store as an ``xarray.Dataset``: coordinates in memory, everything else lazy.

    The coordinates (checkpoint, component, and per unit ``sequence``, ``position``,
    ``token_id``, ``token_text``, ``pattern_class``) are small and are what queries select
    on, so they are read when the store is opened: ``chi.where(chi.pattern_class ==
    "induction", drop=True)``, ``chi.groupby("pattern_class")`` or ``sel(component=...)``
    need no ``.compute()``. χ and the per-chain statistics stay lazy (dask arrays, one per
    Zarr chunk) and are read when indexed or computed.

    The coordinate ``chi_complete`` [checkpoint] says which checkpoints have their χ
    assembled from complete, verified shards; ``chi`` is NaN at the others, so a store
    opened while a run is writing it shows χ only for complete checkpoints, never
    statistics being written or a χ being rewritten. Raises ``StoreError`` if there is no
    store or its schema version is not this code's.

    Several stores (a list, even of one): one Dataset with a leading ``run`` dimension, to
    compare a baseline with retrained models or seeds; see
    :func:`patterning_core.store.runs.open_runs` (``runs`` labels them).

    ``use_dask=False`` reads plain numpy arrays instead of dask arrays (χ is then read when
    the store is opened).
    """
    if not isinstance(store, str | os.PathLike):
        from patterning_core.store.runs import open_runs

        return open_runs(store, runs=runs, use_dask=use_dask)
    if runs is not None:
        raise TypeError("runs= labels several stores: pass open_chi a list of stores.")
    ds = _load_coords(_open(store))
    if use_dask:
        ds = _chunked_like_store(ds)
    complete = xr.DataArray(_chi_complete(store), dims=("checkpoint",))
    ds = ds.assign_coords(chi_complete=complete)
    ds["chi"] = ds["chi"].where(ds["chi_complete"])
    return ds


CHI_ESTIMATORS = {"two-run": chi_from_stats, "restricted": restricted_chi_from_stats}
"""χ from a checkpoint's statistics, by estimator name (each takes ``per_chain``): the
two-run χ the store holds, or the restricted runs' own χ (:func:`chi_at`)."""


def chi_at(
    store: str | Path, step: int, estimator: str = "two-run"
) -> tuple[xr.DataArray, float, xr.Dataset]:
    """χ ``(component, unit)`` of checkpoint ``step`` (loaded), the store's nβ, and the lazy
    store (:func:`open_chi`). A step the store lacks, a χ not assembled yet or a store
    without ``n_beta`` is a ``ConfigError`` naming the fix.

    ``estimator``: ``"two-run"`` is the χ the store holds (``chi_from_stats``, the authors'
    estimator); ``"restricted"`` is −Cov_C[φ, ℓ_z − L_fix] of each restricted run alone
    (``susceptibility.restricted_chi_from_stats``, from the same statistics): the response of
    the restricted run's own ⟨φ⟩_C, which is what a retrained model's localized loss is
    measured as. Both come with the stored χ's coordinates."""
    from patterning_core.sampling.config import ConfigError

    if estimator not in CHI_ESTIMATORS:
        raise ConfigError(f"χ estimator must be one of {tuple(CHI_ESTIMATORS)}, not {estimator!r}.")

    ds = open_chi(store)
    steps = [int(s) for s in ds.checkpoint.values]
    if step not in steps:
        raise ConfigError(f"χ store {store} has checkpoints {steps}, not {step}.")
    if not bool(ds["chi_complete"].sel(checkpoint=step)):
        raise ConfigError(
            f"χ at step {step} in {store} is not assembled: run the susceptibilities "
            "flow (or `patterning demo`) to completion first."
        )
    if "n_beta" not in ds.attrs:
        raise ConfigError(f"χ store {store} does not record the n_beta it was made with.")
    chi = ds["chi"].sel(checkpoint=step).load()
    if estimator != "two-run":  # the stored χ is the two-run one; others from the statistics
        other = CHI_ESTIMATORS[estimator](read_stats(store, step))
        other = other.sel(component=chi.component.values).transpose(*chi.dims)
        chi = chi.copy(data=other.values).assign_attrs(estimator=other.attrs["estimator"])
    return chi, float(ds.attrs["n_beta"]), ds


def _load_coords(ds: xr.Dataset) -> xr.Dataset:
    """Read every coordinate into memory (straight from Zarr: no dask graph)."""
    lazy = [name for name in ds.coords if name not in ds.indexes]
    return ds.assign_coords({name: ds[name].variable.load() for name in lazy})


def _chunked_like_store(ds: xr.Dataset) -> xr.Dataset:
    """Data variables as dask arrays with one block per Zarr chunk (coordinates untouched)."""
    token = uuid.uuid4().hex  # a new graph name per open: stores change between opens
    for name, var in ds.data_vars.items():
        chunks = dict(zip(var.dims, var.encoding.get("chunks") or var.shape, strict=True))
        ds[name] = var.variable.chunk(chunks, name=f"chi-store-{name}-{token}")
    return ds


def _open(store: str | Path, *, use_dask: bool = False) -> xr.Dataset:
    """The store as written (no ``chi_complete`` masking), schema checked.

    The store's own readers and writers use ``use_dask=False`` (lazily indexed Zarr arrays):
    they run inside tasks on Dask workers, where computing a dask array goes through the
    cluster and lets the worker start another task beside the one already computing (two
    shards on one core, each taking twice as long).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = {} if use_dask else {"chunks": None}
            ds = xr.open_zarr(_path(store), consolidated=False, zarr_format=3, **plain)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise StoreMissingError(f"no χ store at {store}.") from err
    _check_schema(ds.attrs, store)
    return ds


def _chi_complete(store: str | Path) -> np.ndarray:
    """bool [checkpoint]: χ assembled and recorded complete (``chi_done``). Stores written
    before that record existed: χ of a checkpoint is one chunk, written whole, so its first
    value tells whether it was assembled."""
    group = _group(store)
    if "chi_done" in group:
        return np.asarray(group["chi_done"][:]) != 0
    first = group["chi"][:, 0, 0]
    return np.isfinite(np.asarray(first))


def _checksum(*arrays: np.ndarray) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a, dtype=np.float64).tobytes(), crc)
    return crc + 1  # 0 means "not done"


def _index(values: Sequence, wanted: Sequence, what: str) -> list[int]:
    lookup = {v: i for i, v in enumerate(values)}
    try:
        return [lookup[w] for w in wanted]
    except KeyError as err:
        raise StoreError(f"{what} {err.args[0]!r} is not in the store ({list(values)}).") from err


def _runs(indices: list[int]) -> list[tuple[int, int, int]]:
    """Split sorted-or-not indices into contiguous runs: (position in list, start, stop)."""
    runs, start = [], 0
    for k in range(1, len(indices) + 1):
        if k == len(indices) or indices[k] != indices[k - 1] + 1:
            runs.append((start, indices[start], indices[k - 1] + 1))
            start = k
    return runs


def write_shard(store: str | Path, checkpoint: int, stats: xr.Dataset) -> None:
    """Write one shard's statistics (any components × chains, with or without the full
    run) into its own chunks, then record it complete with its checksum."""
    ds = _open(store)
    group = _group(store, mode="r+")
    ci = _index([int(c) for c in ds.checkpoint.values], [int(checkpoint)], "checkpoint")[0]
    comps = _index(
        [str(c) for c in ds.component.values], [str(c) for c in stats.component.values], "component"
    )
    chains = _index(
        [int(c) for c in ds.chain.values], [int(c) for c in stats.chain.values], "chain"
    )
    what = (
        f"the shard of checkpoint {int(checkpoint)}, components "
        f"{[str(c) for c in stats.component.values]}, chains {[int(c) for c in stats.chain.values]}"
    )
    with _disk_full_is_clear(store, what):
        _write_shard_chunks(group, ci, comps, chains, stats)


def _write_shard_chunks(
    group: zarr.Group, ci: int, comps: list[int], chains: list[int], stats: xr.Dataset
) -> None:
    """Each run of contiguous components × chains: its data, then its completion records."""
    group["init_loss"][ci] = float(stats.attrs["init_loss"])
    for s_pos, c_start, c_stop in _runs(comps):
        for k_pos, k_start, k_stop in _runs(chains):
            sub = {
                name: stats[name].values[
                    s_pos : s_pos + c_stop - c_start, k_pos : k_pos + k_stop - k_start
                ]
                for name in _RESTRICTED
            }
            for name, values in sub.items():
                group[name][ci, c_start:c_stop, k_start:k_stop] = values
            done = np.zeros((c_stop - c_start, k_stop - k_start), dtype=np.int64)
            for i in range(done.shape[0]):
                for j in range(done.shape[1]):
                    done[i, j] = _checksum(*(sub[n][i, j] for n in _RESTRICTED))
            group["shard_done"][ci, c_start:c_stop, k_start:k_stop] = done
    if "full_count" in stats:
        for k_pos, k_start, k_stop in _runs(chains):
            sub = {name: stats[name].values[k_pos : k_pos + k_stop - k_start] for name in _FULL}
            for name, values in sub.items():
                group[name][ci, k_start:k_stop] = values
            group["full_done"][ci, k_start:k_stop] = np.array(
                [_checksum(*(sub[n][j] for n in _FULL)) for j in range(k_stop - k_start)]
            )


def completed(store: str | Path, checkpoint: int, *, verify: bool = False) -> dict[str, np.ndarray]:
    """Completion of every shard at ``checkpoint``: ``{"restricted": bool [component, chain],
    "full": bool [chain]}``. With ``verify``, a record counts only if its data still match
    the recorded checksum (a lost or altered chunk makes the shard incomplete again)."""
    group = _group(store)
    ds = _open(store)
    ci = _index([int(c) for c in ds.checkpoint.values], [int(checkpoint)], "checkpoint")[0]
    shard_done = group["shard_done"][ci]
    full_done = group["full_done"][ci]
    restricted, full = shard_done != 0, full_done != 0
    if verify:
        data = {n: group[n][ci] for n in _RESTRICTED}
        for i, j in zip(*np.nonzero(restricted), strict=True):
            if _checksum(*(data[n][i, j] for n in _RESTRICTED)) != shard_done[i, j]:
                restricted[i, j] = False
        full_data = {n: group[n][ci] for n in _FULL}
        for j in np.nonzero(full)[0]:
            if _checksum(*(full_data[n][j] for n in _FULL)) != full_done[j]:
                full[j] = False
    return {"restricted": restricted, "full": full}


def read_stats(store: str | Path, checkpoint: int) -> xr.Dataset:
    """The statistics of one checkpoint, in the form ``chi_from_stats`` takes.

    Raises ``StoreError`` naming the shards that are missing or fail their checksum.
    """
    state = completed(store, checkpoint, verify=True)
    ds = _open(store).sel(checkpoint=checkpoint)
    missing = [
        (str(ds.component.values[i]), int(ds.chain.values[j]))
        for i, j in zip(*np.nonzero(~state["restricted"]), strict=True)
    ]
    missing += [("full", int(ds.chain.values[j])) for j in np.nonzero(~state["full"])[0]]
    if missing:
        raise StoreError(
            f"checkpoint {checkpoint}: shards (component, chain) {missing[:6]}"
            f"{'…' if len(missing) > 6 else ''} are missing or fail their checksum; "
            "run the flow again to recompute them."
        )
    names = list(_RESTRICTED) + list(_FULL)
    stats = ds[names].load()
    stats.attrs = {
        "init_loss": float(ds["init_loss"].values),
        "n_beta": ds.attrs.get("n_beta"),
        "sampler_config": ds.attrs.get("sampler_config"),
        "convention": CHI_CONVENTION,
    }
    return stats


def assemble_chi(store: str | Path, checkpoint: int) -> xr.DataArray:
    """Compute χ of ``checkpoint`` from its verified statistics and write it to ``chi``.

    Raises ``StoreError`` naming the shards that are missing. The record ``chi_done`` is
    cleared before χ is rewritten and set after, so readers never take a χ being written
    for a complete one; a χ already stored with these values is left as it is.
    """
    chi = chi_from_stats(read_stats(store, checkpoint))
    ds = _open(store)
    group = _group(store, mode="r+")
    ci = _index([int(c) for c in ds.checkpoint.values], [int(checkpoint)], "checkpoint")[0]
    record = _checksum(chi.values)
    has_record = "chi_done" in group
    if has_record and int(group["chi_done"][ci]) == record == _checksum(group["chi"][ci]):
        return chi
    with _disk_full_is_clear(store, f"χ of checkpoint {int(checkpoint)}"):
        if has_record:
            group["chi_done"][ci] = 0
        group["chi"][ci] = chi.values
        if has_record:
            group["chi_done"][ci] = record
    return chi


def write_chi(store: str | Path, checkpoint: int, chi: np.ndarray | xr.DataArray) -> None:
    """Write an already assembled χ ``[component, unit]`` of ``checkpoint`` (χ computed
    elsewhere, or a synthetic one for tests and benchmarks), recorded complete as
    :func:`assemble_chi` records it. A DataArray is put in the store's component order."""
    ds = _open(store)
    if isinstance(chi, xr.DataArray):
        chi = chi.transpose("component", "unit").sel(component=ds.component.values).values
    values = np.asarray(chi, dtype=np.float64)
    shape = (ds.sizes["component"], ds.sizes["unit"])
    if values.shape != shape or not np.isfinite(values).all():
        raise StoreError(f"χ to write must be finite with shape {shape}, got {values.shape}.")
    group = _group(store, mode="r+")
    ci = _index([int(c) for c in ds.checkpoint.values], [int(checkpoint)], "checkpoint")[0]
    with _disk_full_is_clear(store, f"χ of checkpoint {int(checkpoint)}"):
        group["chi_done"][ci] = 0
        group["chi"][ci] = values
        group["chi_done"][ci] = _checksum(values)


def store_summary(store: str | Path) -> str:
    """A human-readable summary: layout, completion, and χ statistics per checkpoint."""
    ds = open_chi(store, use_dask=False)
    config = json.loads(ds.attrs.get("sampler_config", "{}") or "{}")
    lines = [
        f"χ store {store} (schema {ds.attrs.get('schema_version')})",
        f"  checkpoints {list(map(int, ds.checkpoint.values))}",
        f"  {ds.sizes['component']} components, {ds.sizes['unit']} units, "
        f"{ds.sizes['chain']} chains × {ds.sizes['draw']} draws",
        f"  sampler: {', '.join(f'{k}={v}' for k, v in config.items())}",
        f"  unit coordinates: {[c for c in ds.coords if ds[c].dims == ('unit',) and c != 'unit']}",
    ]
    for ckpt in ds.checkpoint.values:
        state = completed(store, int(ckpt))
        done = int(state["restricted"].sum()) + int(state["full"].sum())
        total = state["restricted"].size + state["full"].size
        if bool(ds["chi_complete"].sel(checkpoint=ckpt)):
            chi = ds["chi"].sel(checkpoint=ckpt).values
            status = f"χ mean {np.nanmean(chi):+.3e}, std {np.nanstd(chi):.3e}"
        else:
            status = "χ not assembled"
        lines.append(f"  checkpoint {int(ckpt)}: {done}/{total} shards complete; {status}")
    return "\n".join(lines)


def plain_string_coords(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Variable-length string coordinates (as read from Zarr v3) as fixed-width unicode,
    which every writer (netCDF, CSV, plotting) accepts."""
    for name, coord in obj.coords.items():
        if coord.dtype.kind in "OT":
            values = np.array([str(v) for v in coord.values.ravel()]).reshape(coord.shape)
            obj = obj.assign_coords({name: (coord.dims, values)})
    return obj
