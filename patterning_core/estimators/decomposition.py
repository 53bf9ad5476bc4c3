"""Decomposition of χ (component × unit) into modes (method.md §5).

    standardized χ = U Σ Vᵀ

``u_k`` (a column of U) are loadings over components, the "principal structures"; ``v_k``
loadings over data units, the "principal data patterns"; σ_k² / Σσ² the explained
variance of mode k.

Standardization (the δ-localization scales each component's row by an unknown Z_C/Z, so
rows are comparable only after standardizing):

- ``"component"`` (default): each row centred and divided by its standard deviation over
  units (a constant row becomes 0);
- ``"unit"``: each column centred and scaled over components;
- ``"none"``: raw χ.

Sign convention: SVD fixes each mode only up to a joint sign flip of (u_k, v_k); we choose
the sign that makes the largest-magnitude component loading positive.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

Standardization = Literal["component", "unit", "none"]


def standardize(chi: xr.DataArray, by: Standardization = "component") -> xr.DataArray:
    """χ with rows (``"component"``) or columns (``"unit"``) centred and scaled to unit std."""
    if by == "none":
        return chi
    if by not in ("component", "unit"):
        raise ValueError(f"standardize by 'component', 'unit' or 'none', not {by!r}.")
    over = "unit" if by == "component" else "component"
    centred = chi - chi.mean(over)
    scale = chi.std(over)
    return (centred / scale.where(scale > 0, 1.0)).assign_attrs(chi.attrs, standardized_by=by)


def decompose(
    chi: xr.DataArray, by: Standardization = "component", n_modes: int | None = None
) -> xr.Dataset:
    """SVD of standardized χ ``(component, unit)``.

    Returns a Dataset with ``singular_value (mode)``, ``explained_variance (mode)`` (ratio),
    ``component_loading (mode, component)``, ``unit_loading (mode, unit)``, keeping the
    unit coordinates (token text, pattern class, …) for reading the modes.
    """
    if set(chi.dims) != {"component", "unit"}:
        raise ValueError(f"χ must have dims (component, unit), got {chi.dims}.")
    matrix = standardize(chi, by).transpose("component", "unit")
    values = np.asarray(matrix.values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("χ holds non-finite values: assemble the store first.")
    u, s, vt = np.linalg.svd(values, full_matrices=False)
    k = len(s) if n_modes is None else min(n_modes, len(s))
    u, s, vt = u[:, :k], s[:k], vt[:k]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    signs[signs == 0] = 1
    u, vt = u * signs, vt * signs[:, None]
    total = float((values**2).sum())
    unit_coords = {name: c for name, c in chi.coords.items() if c.dims == ("unit",)}
    return xr.Dataset(
        {
            "singular_value": ("mode", s),
            "explained_variance": ("mode", s**2 / total if total > 0 else s * 0),
            "component_loading": (("mode", "component"), u.T),
            "unit_loading": (("mode", "unit"), vt),
        },
        coords={"mode": np.arange(1, k + 1), "component": chi.component.values, **unit_coords},
        attrs={"standardized_by": by, "sign_convention": "largest component loading > 0"},
    )


def top_units(modes: xr.Dataset, mode: int, k: int = 10) -> list[dict]:
    """The ``k`` units with the largest |loading| on ``mode``, with their labels."""
    loading = modes["unit_loading"].sel(mode=mode)
    order = np.argsort(-np.abs(loading.values))[:k]
    rows = []
    for i in order:
        row = {"unit": int(loading.unit.values[i]), "loading": float(loading.values[i])}
        for name, coord in loading.coords.items():
            if coord.dims == ("unit",) and name != "unit":
                value = coord.values[i]
                row[name] = value.item() if hasattr(value, "item") else value
        rows.append(row)
    return rows


def mode_alignment(modes: xr.Dataset, head_scores: dict[str, float]) -> xr.DataArray:
    """Per mode, the cosine between its loadings on the components named in
    ``head_scores`` and the centred scores (e.g. each head's later prefix-matching score).

    The loadings are *not* centred: a mode that loads uniformly on every head (PC1,
    typically) has no alignment even when a small admixture of the score pattern would make
    a correlation coefficient ±1. Sign follows the modes' sign convention."""
    names = [c for c in map(str, modes.component.values) if c in head_scores]
    if len(names) < 3:
        raise ValueError("need scores for at least 3 components to align modes with.")
    scores = np.array([head_scores[c] for c in names], dtype=np.float64)
    pattern = scores - scores.mean()
    loadings = modes["component_loading"].sel(component=names).values  # [mode, comp]
    norms = np.linalg.norm(loadings, axis=1) * np.linalg.norm(pattern)
    cosine = np.where(norms > 0, loadings @ pattern / np.where(norms > 0, norms, 1), 0.0)
    return xr.DataArray(
        cosine, dims=("mode",), coords={"mode": modes.mode.values}, name="alignment"
    )


def aligned_mode(modes: xr.Dataset, head_scores: dict[str, float]) -> tuple[int, float]:
    """The mode whose head loadings best follow the heads' prefix-matching scores:
    ``(mode, alignment)`` with the largest |alignment| (reported, not assumed to be PC2)."""
    alignment = mode_alignment(modes, head_scores)
    best = int(np.abs(alignment.values).argmax())
    return int(alignment.mode.values[best]), float(alignment.values[best])
