"""Readouts of χ: the map of a store's susceptibilities (method.md §2, §5).

Everything here works on one checkpoint's χ ``(component, unit)`` or on the modes of
several checkpoints, as plain numpy/xarray; the store (``patterning_core.store.chi_map``)
writes the results next to χ and the report (``patterning_core.report.chi_map``) draws them.

- **Standardize per component first**: the δ-localization scales each component's row of
  χ by an unknown factor, so rows are comparable only after standardizing (each row centred
  over units and divided by its standard deviation, ``decomposition.standardize``).
- **Modes**: standardized χ = U Σ Vᵀ; ``component_loading`` = u_k (loadings over
  components), ``unit_loading`` = v_k (loadings over units), ``explained_variance`` =
  σ_k² / Σσ² (the full spectrum sums to 1). Sign: largest |component loading| positive.
- **Per-layer spectra**: the same SVD restricted to the components of one layer (``L0H3``
  belongs to layer ``L0``; ``embed``, ``unembed`` and any other name form a group of their
  own): how many directions one layer's heads respond to the data in.
- **Token embeddings**: each unit's susceptibility vector (its column of standardized χ,
  one entry per component) placed in 2-D by PCA (the scores σ_k v_k of modes 1 and 2, the
  same decomposition as the modes) and by UMAP (``umap-learn``, seeded and single-threaded,
  so a rerun gives the same picture).
- **Mode matching across checkpoints**: SVD orders modes by variance and fixes each only up
  to sign, so mode 2 at one checkpoint may be mode 3 at the next, flipped. Modes of
  neighbouring checkpoints are paired by the Hungarian assignment on |cos| of their
  component loadings and their signs aligned, chained outward from a reference checkpoint:
  tracked mode j is mode j of the reference, followed over training.
- **Coordinate correlations**: Spearman's ρ between a unit coordinate (e.g. position of a
  whitespace token within its run) and each mode's unit loadings over a subset of units.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import decompose, standardize

_HEAD = re.compile(r"^(L\d+)H\d+$")

# UMAP needs a neighbourhood graph; below this many units it says nothing useful.
MIN_UMAP_UNITS = 8

_umap_cached = False


def _cache_umap_compilation() -> None:
    """Let numba keep umap-learn's compiled functions on disk.

    umap-learn compiles several functions (the fuzzy simplicial set, the layout epoch) on
    first use in every process without asking numba to cache them: about 30 s of one core
    per process, paid again by every Dask worker and test run. Enabling numba's on-disk
    cache for them (next to umap's sources, or numba's user cache directory when that is not
    writable; never in this repository) makes later processes load them in a fraction of a
    second. Numba keys the cache on the source file and its own version, so a changed umap
    recompiles. If numba's internals differ from what is expected here, nothing is changed.
    """
    global _umap_cached
    if _umap_cached:
        return
    _umap_cached = True
    import sys

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover - another numba layout
        return
    for name, module in list(sys.modules.items()):
        if name != "umap" and not name.startswith("umap."):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                with contextlib.suppress(Exception):
                    obj.enable_caching()


@dataclass(frozen=True)
class ChiMapSettings:
    """What a readout computes (the plots' colouring is not part of it).

    ``n_modes``: leading modes kept per checkpoint (at most the number of components);
    ``umap``: compute the UMAP embedding (the slow part) or not; ``umap_neighbors``,
    ``umap_min_dist``, ``seed``: UMAP's settings (the seed also fixes its initialization).
    """

    n_modes: int = 8
    umap: bool = True
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_modes < 1:
            raise ValueError(f"n_modes must be >= 1, got {self.n_modes}.")
        if self.umap_neighbors < 2:
            raise ValueError(f"umap_neighbors must be >= 2, got {self.umap_neighbors}.")
        if not 0.0 <= self.umap_min_dist <= 1.0:
            raise ValueError(f"umap_min_dist must lie in [0, 1], got {self.umap_min_dist}.")

    def to_dict(self) -> dict:
        return {**asdict(self), "standardized_by": "component"}

    @classmethod
    def from_dict(cls, values: dict) -> ChiMapSettings:
        """The settings from ``to_dict``'s output (or any mapping of the fields)."""
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in fields})

    def digest(self) -> str:
        """Short stable hash of the settings (names a readout computed with them)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def component_layer(name: str) -> str:
    """The layer a component belongs to: ``"L1H5"`` → ``"L1"``; other names (``embed``,
    ``unembed``, ...) are their own group."""
    match = _HEAD.match(name)
    return match.group(1) if match else name


def layer_groups(components: Sequence[str]) -> dict[str, list[int]]:
    """Row indices of each layer's components, layers in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(components):
        groups.setdefault(component_layer(str(name)), []).append(i)
    return groups


def explained_variance_spectrum(z: np.ndarray) -> np.ndarray:
    """σ_k² / Σσ² of a (standardized) matrix: the full spectrum, summing to 1 (all zeros for
    a zero matrix)."""
    s = np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)
    total = float((s**2).sum())
    return s**2 / total if total > 0 else np.zeros_like(s)


def layer_spectra(z: np.ndarray, components: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Per layer, the explained-variance spectrum of its rows of standardized χ ``z``
    ``[component, unit]``: ``(layers, ratios [layer, layer_mode])``, NaN past the number of
    modes a layer has."""
    groups = layer_groups(components)
    width = max(min(len(rows), z.shape[1]) for rows in groups.values())
    out = np.full((len(groups), width), np.nan)
    for i, rows in enumerate(groups.values()):
        spectrum = explained_variance_spectrum(z[rows])
        out[i, : len(spectrum)] = spectrum
    return list(groups), out


def umap_embedding(
    vectors: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """2-D UMAP of the rows of ``vectors`` ``[unit, feature]``: seeded and on one thread, so
    the same input gives the same embedding. NaN for fewer than ``MIN_UMAP_UNITS`` rows."""
    n = vectors.shape[0]
    if n < MIN_UMAP_UNITS:
        return np.full((n, 2), np.nan)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap's notes on n_jobs with a seed, numba's on TBB
        from umap import UMAP  # slow first import (numba)

        _cache_umap_compilation()
        reducer = UMAP(
            n_components=2,
            n_neighbors=min(n_neighbors, n - 1),
            min_dist=min_dist,
            random_state=seed,
            n_jobs=1,
            init="spectral" if n > 2 * n_neighbors else "random",
        )
        embedding = reducer.fit_transform(np.asarray(vectors, dtype=np.float32))
    return np.asarray(embedding, dtype=np.float64)


def checkpoint_readout(chi: xr.DataArray, settings: ChiMapSettings) -> xr.Dataset:
    """The readout of one checkpoint's χ ``(component, unit)``.

    Returns a Dataset with ``explained_variance``, ``singular_value`` [mode],
    ``component_loading`` [mode, component], ``unit_loading`` [mode, unit] (the leading
    ``n_modes`` of standardized χ, ``decomposition.decompose``), ``spectrum`` [rank] (the
    full explained-variance spectrum, summing to 1), ``layer_explained_variance`` [layer,
    layer_mode], and the token embeddings ``pca`` and (with ``settings.umap``) ``umap``
    [unit, axis].
    """
    if set(chi.dims) != {"component", "unit"}:
        raise ValueError(f"χ must have dims (component, unit), got {chi.dims}.")
    chi = chi.transpose("component", "unit")
    z = np.asarray(standardize(chi, "component").values, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ValueError("χ holds non-finite values: assemble the checkpoint first.")
    modes = decompose(chi, "component", settings.n_modes)
    components = [str(c) for c in chi.component.values]
    layers, layer_ev = layer_spectra(z, components)
    spectrum = explained_variance_spectrum(z)
    k = modes.sizes["mode"]
    scores = modes["unit_loading"].values[: min(2, k)].T * modes["singular_value"].values[:2]
    pca = np.zeros((z.shape[1], 2))
    pca[:, : scores.shape[1]] = scores
    data = {
        "explained_variance": modes["explained_variance"],
        "singular_value": modes["singular_value"],
        "component_loading": modes["component_loading"],
        "unit_loading": modes["unit_loading"].drop_vars(
            [c for c in modes.coords if modes[c].dims == ("unit",) and c != "unit"]
        ),
        "spectrum": ("rank", spectrum),
        "layer_explained_variance": (("layer", "layer_mode"), layer_ev),
        "pca": (("unit", "axis"), pca),
    }
    if settings.umap:
        data["umap"] = (
            ("unit", "axis"),
            umap_embedding(
                z.T,
                n_neighbors=settings.umap_neighbors,
                min_dist=settings.umap_min_dist,
                seed=settings.seed,
            ),
        )
    return xr.Dataset(
        data,
        coords={
            "mode": modes["mode"].values,
            "component": components,
            "unit": chi.unit.values,
            "rank": np.arange(1, len(spectrum) + 1),
            "layer": layers,
            "layer_mode": np.arange(1, layer_ev.shape[1] + 1),
            "axis": [1, 2],
        },
        attrs={"settings": json.dumps(settings.to_dict(), sort_keys=True)},
    )


def match_modes(loadings: np.ndarray, reference: int = -1) -> dict[str, np.ndarray]:
    """Follow modes over checkpoints by their component loadings.

    ``loadings`` ``[checkpoint, mode, component]`` (checkpoints in training order). Tracked
    mode j is mode j of checkpoint ``reference``; from there, outward in both directions,
    each checkpoint's modes are assigned one-to-one to the tracked modes of its neighbour
    (toward the reference) by the Hungarian assignment maximizing Σ|cos|, and each sign is
    chosen so the cosine is positive.

    Returns ``index`` [checkpoint, track] (the checkpoint's own mode position, 0-based),
    ``sign`` [checkpoint, track] (±1), ``cosine`` [checkpoint, track] (|cos| with the
    neighbour's tracked loading; 1 at the reference), and ``loading`` [checkpoint, track,
    component] (sign × the matched loading: the trajectory).
    """
    from scipy.optimize import linear_sum_assignment

    loadings = np.asarray(loadings, dtype=np.float64)
    if loadings.ndim != 3:
        raise ValueError(f"loadings must be [checkpoint, mode, component], got {loadings.shape}.")
    n_ckpt, k, _ = loadings.shape
    ref = range(n_ckpt)[reference]
    norms = np.linalg.norm(loadings, axis=2, keepdims=True)
    unit = loadings / np.where(norms > 0, norms, 1.0)
    index = np.zeros((n_ckpt, k), dtype=np.int64)
    sign = np.ones((n_ckpt, k), dtype=np.int64)
    cosine = np.ones((n_ckpt, k))
    index[ref] = np.arange(k)
    tracked = {ref: unit[ref]}
    for order in (range(ref + 1, n_ckpt), range(ref - 1, -1, -1)):
        previous = ref
        for c in order:
            cos = tracked[previous] @ unit[c].T  # [track, own mode]
            rows, cols = linear_sum_assignment(-np.abs(cos))
            index[c, rows] = cols
            signed = cos[rows, cols]
            sign[c, rows] = np.where(signed < 0, -1, 1)
            cosine[c, rows] = np.abs(signed)
            tracked[c] = unit[c][index[c]] * sign[c][:, None]
            previous = c
    loading = np.take_along_axis(loadings, index[:, :, None], axis=1) * sign[:, :, None]
    return {"index": index, "sign": sign, "cosine": cosine, "loading": loading}


def coordinate_correlation(
    unit_loading: xr.DataArray,
    coordinate: str | np.ndarray | xr.DataArray,
    units: np.ndarray | xr.DataArray | None = None,
) -> xr.DataArray:
    """Spearman's ρ between a unit coordinate and each mode's unit loadings.

    ``unit_loading``: dims ``(..., mode, unit)`` (e.g. a readout's ``unit_loading``
    [checkpoint, mode, unit]); ``coordinate``: the name of one of its unit coordinates, or
    values per unit (e.g. a token's position within its run of whitespace, computed by the
    caller); ``units``: a boolean mask over units selecting the subset (default: all).
    Units whose coordinate is not finite are left out. Returns ρ with the loadings' dims
    less ``unit`` (NaN where either side is constant or fewer than 3 units remain). Sign
    follows the modes' sign convention (flip with the matched sign to compare checkpoints).
    """
    from scipy.stats import rankdata

    if isinstance(coordinate, str):
        if coordinate not in unit_loading.coords:
            names = [c for c in unit_loading.coords if unit_loading[c].dims == ("unit",)]
            raise KeyError(f"no unit coordinate {coordinate!r}; the loadings have {names}.")
        values = np.asarray(unit_loading[coordinate].values)
    else:
        values = np.asarray(coordinate)
    values = values.astype(np.float64)
    if values.shape != (unit_loading.sizes["unit"],):
        raise ValueError(
            f"the coordinate has shape {values.shape}; expected one value per unit "
            f"({unit_loading.sizes['unit']})."
        )
    keep = np.isfinite(values)
    if units is not None:
        keep &= np.asarray(units, dtype=bool)
    loadings = unit_loading.isel(unit=np.nonzero(keep)[0])
    x = rankdata(values[keep])
    y = rankdata(loadings.values, axis=loadings.get_axis_num("unit"))
    y = np.moveaxis(y, loadings.get_axis_num("unit"), -1)
    xc = x - x.mean()
    yc = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc**2).sum() * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (yc @ xc) / np.where(denom > 0, denom, 1.0), np.nan)
    if keep.sum() < 3:
        rho = np.full_like(rho, np.nan)
    dims = [d for d in loadings.dims if d != "unit"]
    coords = {name: c for name, c in loadings.coords.items() if "unit" not in c.dims}
    return xr.DataArray(rho, dims=dims, coords=coords, name="spearman")
