"""Plots of χ and its modes (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import standardize
from patterning_core.report.pyplot import plt, save_figure


def plot_chi_heatmap(chi: xr.DataArray, path: str | os.PathLike[str], title: str = "") -> Path:
    """Per-component standardized χ, components × units (blue: expresses, red: suppresses)."""
    z = standardize(chi, "component").transpose("component", "unit").values
    fig, ax = plt.subplots(figsize=(min(14, 2 + z.shape[1] / 40), 1 + 0.3 * z.shape[0]))
    lim = float(np.nanmax(np.abs(z))) or 1.0
    image = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(z.shape[0]), [str(c) for c in chi.component.values], fontsize=7)
    ax.set_xlabel("probe unit (token)")
    ax.set_title(title or "χ, standardized per component")
    fig.colorbar(image, ax=ax, fraction=0.02, label="standardized χ")
    return save_figure(fig, path)


def plot_modes(
    modes: xr.Dataset, path: str | os.PathLike[str], n_modes: int = 4, title: str = ""
) -> Path:
    """Explained variance per mode, and the component loadings of the leading modes."""
    k = min(n_modes, modes.sizes["mode"])
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 2.4]}
    )
    ev = modes["explained_variance"].values
    left.bar(modes["mode"].values[: min(10, len(ev))], ev[:10], color="0.4")
    left.set_xlabel("mode")
    left.set_ylabel("explained variance")
    loadings = modes["component_loading"].isel(mode=slice(0, k)).values
    lim = float(np.abs(loadings).max()) or 1.0
    image = right.imshow(loadings, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    right.set_yticks(range(k), [f"PC{m}" for m in modes["mode"].values[:k]])
    names = [str(c) for c in modes.component.values]
    right.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    right.set_title("component loadings")
    fig.colorbar(image, ax=right, fraction=0.02)
    fig.suptitle(title)
    return save_figure(fig, path)
