"""The fin readings against the number of SGLD chains behind χ.

A store with ``n`` chains holds ``n / k`` independent χ estimates of ``k`` chains each
(disjoint chain sets; every chain has its own noise stream and minibatch order). Reading
the fin off each set (:func:`fin_store.read_fin`) shows how much of a reading is the
sampler's: a reading that is the network's stays put as ``k`` grows while its spread over
the sets shrinks as about 1/√k; a correlation that noise attenuates (the fin metric is a
Spearman ρ with a noisy mode's loadings) rises with ``k``.

"Beyond the initialization" needs a null of its own (a second noisy χ adds information even
when nothing was learned): the trained χ of set ``i`` is read against the initialization's
χ of another set ``j`` (so the two estimates share no minibatch order nor noise stream), and
the initialization's set ``i`` against its set ``j`` is the null: two estimates of one
untrained network, with the same number of chains.

Split-half reliability (``split_half``): per component, the Pearson correlation over units
of χ from the first and the second half of the chains, and its Spearman–Brown projection to
all chains, 2r / (1 + r); also of the standardized χ less its leading mode, where the
small modes live.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import standardize
from patterning_core.experiments.spacing.fin_store import (
    abs_cosine,
    check_same_workload,
    chi_of_chains,
    fin_inputs,
    fin_loading,
    read_fin,
)
from patterning_core.model.transformer import TransformerConfig
from patterning_core.store.chi_store import read_stats

__all__ = [
    "chain_sets",
    "chi_of_chains",
    "fin_by_chain_count",
    "fin_by_chain_count_of_stats",
    "sequence_units",
    "split_half",
    "summarize",
]


def chain_sets(num_chains: int, size: int) -> list[list[int]]:
    """Disjoint sets of ``size`` consecutive chain indices covering ``num_chains`` chains."""
    if size < 1 or num_chains % size:
        raise ValueError(
            f"{num_chains} chains do not split into sets of {size}: pick a size that divides "
            f"{num_chains}."
        )
    return [list(range(start, start + size)) for start in range(0, num_chains, size)]


def sequence_units(chi: xr.DataArray | xr.Dataset, sequences: Sequence[int]) -> np.ndarray:
    """Boolean mask ``[unit]`` of the units of probe sequences ``sequences`` (the
    ``sequence`` unit coordinate of χ or of its store)."""
    if "sequence" not in chi.coords:
        raise ValueError("this χ has no `sequence` unit coordinate: select units by index.")
    return np.isin(chi["sequence"].values, np.asarray(sequences))


def _chi(
    stats: xr.Dataset,
    chains: Sequence[int],
    units: np.ndarray | None = None,
    components: Sequence[str] | None = None,
    estimator: str = "two_run",
) -> tuple[xr.DataArray, np.ndarray]:
    """χ ``(component, unit)`` and mean probe loss ``[unit]`` of ``chains``, restricted to
    ``units`` (boolean mask) and ``components`` (names)."""
    chi, loss = chi_of_chains(stats, chains, estimator)
    if units is not None:
        chi, loss = chi.isel(unit=np.flatnonzero(units)), loss[units]
    if components is not None:
        chi = chi.sel(component=list(components))
    return chi, loss


def _without_leading_mode(chi: xr.DataArray) -> np.ndarray:
    """Standardized χ ``[component, unit]`` less its own best rank-1 approximation."""
    x = standardize(chi, "component").values
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return x - s[0] * np.outer(u[:, 0], vt[0])


def split_half(
    stats: xr.Dataset,
    *,
    units: np.ndarray | None = None,
    components: Sequence[str] | None = None,
    estimator: str = "two_run",
) -> dict:
    """Split-half reliability of χ per component (see the module docstring):
    ``{"per_component" {name: r}, "median", "spearman_brown"}`` (the last of the median),
    and the same of the standardized χ less each half's leading mode (``residual_median``,
    ``residual_spearman_brown``): raw χ is dominated by a rank-1 term common to all
    components, which agrees between any two estimates, so the smaller modes that the fin
    lives on are read from the residual. ``units``, ``components``, ``estimator``: as in
    :func:`fin_by_chain_count`."""
    n = stats.sizes["chain"]
    if n < 2 or n % 2:
        raise ValueError(f"split-half needs an even number of chains, not {n}.")
    first, _ = _chi(stats, range(n // 2), units, components, estimator)
    second, _ = _chi(stats, range(n // 2, n), units, components, estimator)
    per = {
        str(c): float(np.corrcoef(first.sel(component=c), second.sel(component=c))[0, 1])
        for c in first.component.values
    }
    a, b = _without_leading_mode(first), _without_leading_mode(second)
    residual = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b, strict=True)]
    median = float(np.median(list(per.values())))
    residual_median = float(np.median(residual))
    return {
        "per_component": per,
        "median": median,
        "spearman_brown": 2 * median / (1 + median),
        "residual_per_component": dict(zip(per, residual, strict=True)),
        "residual_median": residual_median,
        "residual_spearman_brown": 2 * residual_median / (1 + residual_median),
    }


def _reading(fin: dict) -> dict:
    d = fin["decoding"]
    row = {
        "metric": fin["metric"],
        "mode": fin["mode"],
        "partial_metric": fin["partial_metric"],
        "from_chi": d["from_chi"],
        "beyond_loss": d["beyond_loss"],
    }
    if "beyond_init" in d:
        row["beyond_init"] = d["beyond_init"]
    return row


def fin_by_chain_count(
    store: str | Path,
    step: int,
    config: TransformerConfig,
    sizes: Sequence[int],
    init: tuple[str | Path, int] | None = None,
    *,
    units: np.ndarray | None = None,
    components: Sequence[str] | None = None,
    estimator: str = "two_run",
) -> list[dict]:
    """One row per (chain-set size, set): the fin readings of χ of checkpoint ``step`` from
    that set alone, ``{"size", "set", "chains", "metric", "mode", "partial_metric",
    "from_chi", "beyond_loss"}``, and where a size has several sets ``agreement``: |cos| of
    the fin mode's unit loadings with those of the next set's fin mode (is the mode found
    again by an independent estimate?); with ``init`` (the initialization's ``(store, step)``, the
    same probe units and at least as many chains) also ``beyond_init`` against the
    initialization's next set (``(i + 1) mod sets``) and the row's ``init`` readings: the
    initialization's own set ``i`` (``init_metric``, ``init_from_chi``) and the null
    ``init_beyond_init`` (its set ``i`` against its set ``(i + 1) mod sets``). Sizes with one
    set get no beyond-initialization readings (no disjoint set to read against).

    ``units`` (boolean ``[unit]``) and ``components`` (names) restrict every χ, trained and
    initialization, before it is read; ``estimator`` ("two_run" or "restricted") is the
    estimator every χ is read with (module docstring)."""
    chi_all, positions, _, _ = fin_inputs(store, step, config)
    if components is not None:
        unknown = sorted(set(components) - set(chi_all.component.values.tolist()))
        if unknown:
            raise ValueError(f"components {unknown} are not in {store}.")
    init_stats = None
    if init is not None:
        check_same_workload(store, init)
        init_stats = read_stats(*init)
    return fin_by_chain_count_of_stats(
        read_stats(store, step),
        positions,
        sizes,
        init_stats,
        units=units,
        components=components,
        estimator=estimator,
    )


def fin_by_chain_count_of_stats(
    stats: xr.Dataset,
    positions: np.ndarray,
    sizes: Sequence[int],
    init_stats: xr.Dataset | None = None,
    *,
    units: np.ndarray | None = None,
    components: Sequence[str] | None = None,
    estimator: str = "two_run",
) -> list[dict]:
    """:func:`fin_by_chain_count` of statistics held in memory: ``stats`` of one checkpoint
    (``sample_susceptibility_stats``' or ``read_stats``' Dataset), each probe unit's run
    position ``positions`` ``[unit]`` (``fin.run_positions``, NaN outside runs) and the
    initialization's statistics ``init_stats`` (same units, at least as many chains)."""
    if init_stats is not None and init_stats.sizes["chain"] < stats.sizes["chain"]:
        raise ValueError(
            f"the initialization's statistics have {init_stats.sizes['chain']} chains, fewer "
            f"than {stats.sizes['chain']}: estimate it with as many."
        )
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (stats.sizes["unit"],):
        raise ValueError(f"positions: one per unit ({stats.sizes['unit']}), not {positions.shape}.")
    if units is not None:
        units = np.asarray(units, dtype=bool)
        if units.shape != positions.shape:
            raise ValueError(f"units: a mask over {positions.size} units, not {units.shape}.")
        positions = positions[units]
    rows = []
    for size in sizes:
        loadings = []
        sets = chain_sets(stats.sizes["chain"], size)
        init_chi = []
        if init_stats is not None and len(sets) > 1:
            for chains in sets:
                chi, loss = _chi(init_stats, chains, units, components, estimator)
                init_chi.append((chi, loss, standardize(chi, "component").values))
        for i, chains in enumerate(sets):
            chi, loss = _chi(stats, chains, units, components, estimator)
            other = init_chi[(i + 1) % len(sets)][2] if init_chi else None
            row = {"size": size, "set": i, "chains": chains}
            row.update(_reading(read_fin(chi, positions, loss, other)))
            loadings.append(fin_loading(chi, row["mode"]))
            if init_chi:
                own_chi, own_loss, _ = init_chi[i]
                own = read_fin(own_chi, positions, own_loss, other)
                row["init_metric"] = own["metric"]
                row["init_from_chi"] = own["decoding"]["from_chi"]
                row["init_beyond_init"] = own["decoding"]["beyond_init"]
            rows.append(row)
        if len(sets) > 1:  # the fin mode of set i against that of set i + 1
            for i, row in enumerate(rows[-len(sets) :]):
                row["agreement"] = abs_cosine(loadings[i], loadings[(i + 1) % len(sets)])
    return rows


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean and sd over the sets of each size, per reading: ``{"size", "sets", KEY: (mean,
    sd)}`` (sd 0 for a size with one set)."""
    out = []
    for size in sorted({r["size"] for r in rows}):
        group = [r for r in rows if r["size"] == size]
        summary: dict = {"size": size, "sets": len(group)}
        for key in group[0]:
            if key in ("size", "set", "chains", "mode"):
                continue
            values = np.array([r[key] for r in group], dtype=np.float64)
            sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            summary[key] = (float(values.mean()), sd)
        out.append(summary)
    return out
