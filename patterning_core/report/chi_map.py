"""The page of a χ map (``store.chi_map``): spectra, token embeddings, head loadings and
modes over training, as PNGs and one Markdown page that shows them.

Takes the map as an ``xarray.Dataset`` (``store.chi_map.open_chi_map``), so this module
needs no store: ``render_chi_map(ds, out_dir, color_by)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from patterning_core.report.chi_plots import plot_modes
from patterning_core.report.markdown import markdown_table
from patterning_core.report.pyplot import plt, save_figure

# Categorical colourings show the most frequent values; the rest are drawn as "other".
MAX_CATEGORIES = 10


def unit_coordinates(ds: xr.Dataset) -> list[str]:
    """Names of the map's unit coordinates (what the embeddings can be coloured by)."""
    return [str(n) for n, c in ds.coords.items() if c.dims == ("unit",) and n != "unit"]


def colour_keys(ds: xr.Dataset, color_by: Sequence[str] = ()) -> list[str]:
    """``pattern_class`` (when the store has it) followed by ``color_by``; ``KeyError`` for
    a name that is not a unit coordinate."""
    names = unit_coordinates(ds)
    missing = [c for c in color_by if c not in names and c != "unit"]
    if missing:
        raise KeyError(f"no unit coordinate {missing}; the store has {names}.")
    keys = ["pattern_class"] if "pattern_class" in names else []
    return keys + [c for c in color_by if c not in keys]


def _is_continuous(values: np.ndarray) -> bool:
    if values.dtype.kind == "f":
        return True
    return values.dtype.kind in "iu" and len(np.unique(values)) > MAX_CATEGORIES


def _scatter(ax, xy: np.ndarray, values: np.ndarray, key: str) -> None:
    """One embedding coloured by one coordinate: a colour bar for numbers, a legend of the
    most frequent values for categories."""
    if _is_continuous(values):
        points = ax.scatter(
            xy[:, 0], xy[:, 1], c=values.astype(float), s=3, cmap="viridis", rasterized=True
        )
        ax.figure.colorbar(points, ax=ax, fraction=0.04, label=key)
        return
    labels = np.array([str(v) for v in values], dtype=object)
    names, counts = np.unique(labels, return_counts=True)
    top = list(names[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES])
    other = ~np.isin(labels, top)
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=3, c="0.8", label="other", rasterized=True)
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(top):
        keep = labels == name
        ax.scatter(
            xy[keep, 0],
            xy[keep, 1],
            s=3,
            color=colours(i % 10),
            label=repr(name)[1:-1][:18],
            rasterized=True,
        )
    ax.legend(fontsize=6, markerscale=3, loc="best", title=key, title_fontsize=7)


def plot_embeddings(
    ds: xr.Dataset, step: int, path: str | os.PathLike[str], color_by: Sequence[str] = ()
) -> Path:
    """PCA (and UMAP, if computed) of the per-token susceptibility vectors at ``step``,
    one column per colouring."""
    at = ds.sel(checkpoint=step)
    methods = [m for m in ("pca", "umap") if m in at and np.isfinite(at[m].values).all()]
    keys = colour_keys(ds, color_by) or ["unit"]
    fig, axes = plt.subplots(
        len(methods),
        len(keys),
        figsize=(4.2 * len(keys), 3.8 * len(methods)),
        squeeze=False,
        layout="constrained",
    )
    for row, method in zip(axes, methods, strict=True):
        xy = at[method].transpose("unit", "axis").values
        for ax, key in zip(row, keys, strict=True):
            values = np.asarray(at[key].values)
            _scatter(ax, xy, values, key)
            ax.set_title(f"{method.upper()}, coloured by {key}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"per-token susceptibility vectors at step {step} ({ds.sizes['unit']} units)")
    return save_figure(fig, path)


def spectrum_layers(ds: xr.Dataset) -> list[str]:
    """The layers with at least two modes (a one-component group's spectrum is just 1)."""
    ev = ds["layer_explained_variance"]
    return [
        str(x)
        for x in ds.layer.values
        if int(ev.sel(layer=x).notnull().any("checkpoint").sum()) > 1
    ]


def plot_spectra(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Explained-variance spectra of standardized χ: all components, then each layer of
    several components; one line per checkpoint."""
    panels = ["all components", *spectrum_layers(ds)]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, layout="constrained"
    )
    steps = [int(s) for s in ds.checkpoint.values]
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(steps)))
    for ax, panel in zip(axes.flat, panels, strict=False):
        for colour, step in zip(colours, steps, strict=True):
            if panel == "all components":
                ev = ds["spectrum"].sel(checkpoint=step).values
            else:
                ev = ds["layer_explained_variance"].sel(checkpoint=step, layer=panel).values
            ev = ev[np.isfinite(ev)]
            ax.plot(np.arange(1, len(ev) + 1), ev, "o-", ms=3, color=colour, label=str(step))
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("mode", fontsize=8)
        ax.set_ylim(0, 1)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes.flat[0].set_ylabel("explained variance")
    axes.flat[0].legend(title="step", fontsize=7, title_fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("explained-variance spectrum per checkpoint and layer")
    return save_figure(fig, path)


def plot_trajectories(ds: xr.Dataset, path: str | os.PathLike[str], n_tracks: int = 4) -> Path:
    """Modes followed over training: explained variance of each tracked mode, and the
    component loadings of the leading tracked modes at every checkpoint (sign aligned)."""
    k = min(n_tracks, ds.sizes["track"])
    steps = [int(s) for s in ds.checkpoint.values]
    names = [str(c) for c in ds.component.values]
    fig, axes = plt.subplots(
        1,
        k + 1,
        figsize=(3.8 + 3.6 * k, 1.4 + max(2.4, 0.32 * len(steps))),
        layout="constrained",
    )
    ev = ds["tracked_explained_variance"]
    for track in ds.track.values[: max(k, min(8, ds.sizes["track"]))]:
        axes[0].plot(steps, ev.sel(track=track).values, "o-", ms=3, label=f"T{int(track)}")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("explained variance")
    axes[0].legend(fontsize=7)
    axes[0].set_title("tracked modes", fontsize=9)
    lim = float(np.abs(ds["tracked_loading"].values).max()) or 1.0
    for ax, track in zip(axes[1:], ds.track.values[:k], strict=True):
        at = ds.sel(track=track)
        image = ax.imshow(
            at["tracked_loading"].transpose("checkpoint", "component").values,
            aspect="auto",
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            interpolation="nearest",
        )
        matches = zip(
            at["matched_mode"].values,
            at["matched_sign"].values,
            at["match_cosine"].values,
            strict=True,
        )
        for row, (mode, sign, cosine) in enumerate(matches):
            ax.text(
                len(names) - 0.6,
                row,
                f"PC{int(mode)}{'+' if sign > 0 else '−'} |cos| {cosine:.2f}",
                ha="right",
                va="center",
                fontsize=6,
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
            )
        ax.set_yticks(range(len(steps)), [str(s) for s in steps], fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_title(f"T{int(track)} component loadings", fontsize=9)
    axes[1].set_ylabel("step (box: own mode, sign, |cos|)", fontsize=7)
    fig.colorbar(image, ax=axes[1:].tolist(), fraction=0.02)
    fig.suptitle(
        f"modes over training (T j = mode j at step {ds.attrs.get('reference_checkpoint')})"
    )
    return save_figure(fig, path)


def _pct(x: float) -> str:
    return f"{x:.1%}" if np.isfinite(x) else "–"


def summary_markdown(ds: xr.Dataset, n_modes: int = 4, images: bool = False) -> list[str]:
    """Tables of the map: explained variance per checkpoint (all components and the first
    mode of each layer), the tracked modes' matches, and each leading mode's largest
    component loadings; with ``images``, the spectra and trajectories PNGs of
    :func:`render_chi_map` above their tables."""
    steps = [int(s) for s in ds.checkpoint.values]
    k = min(n_modes, ds.sizes["mode"])
    layers = spectrum_layers(ds)
    rows = []
    for step in steps:
        at = ds.sel(checkpoint=step)
        row = {"step": step}
        row.update(
            {
                f"PC{m}": _pct(float(at["explained_variance"].sel(mode=m)))
                for m in at.mode.values[:k]
            }
        )
        row.update(
            {
                f"{layer} PC1": _pct(float(at["layer_explained_variance"].sel(layer=layer)[0]))
                for layer in layers
            }
        )
        if "map_current" in ds.coords and not bool(at["map_current"]):
            row["step"] = f"{step} (χ changed since)"
        rows.append(row)
    lines = ["## Explained variance", ""]
    if images:
        lines += ["![spectra](spectra.png)", ""]
    lines += markdown_table(rows, align=["r"] * len(rows[0]))
    track_rows = []
    for track in ds.track.values[:k]:
        at = ds.sel(track=track)
        row = {"track": f"T{int(track)}"}
        for step in steps:
            one = at.sel(checkpoint=step)
            sign = "+" if int(one["matched_sign"]) > 0 else "−"
            cosine = float(one["match_cosine"])
            row[str(step)] = f"PC{int(one['matched_mode'])}{sign} ({cosine:.2f})"
        track_rows.append(row)
    lines += [
        "",
        f"## Modes over training (T j = mode j at step {ds.attrs.get('reference_checkpoint')})",
        "",
        "Each cell: the checkpoint's own mode, its sign, and |cos| with the tracked mode at",
        "the neighbouring checkpoint (toward the reference).",
        "",
    ]
    if images and len(steps) > 1:
        lines += ["![modes over training](trajectories.png)", ""]
    lines += markdown_table(track_rows)
    lines += ["", "## Largest component loadings", ""]
    load_rows = []
    for step in steps:
        for m in ds.mode.values[:k]:
            loading = ds["component_loading"].sel(checkpoint=step, mode=m)
            order = np.argsort(-np.abs(loading.values))[:5]
            comps = ", ".join(
                f"{loading.component.values[i]} {loading.values[i]:+.2f}" for i in order
            )
            load_rows.append({"step": step, "mode": f"PC{int(m)}", "components": comps})
    lines += markdown_table(load_rows)
    return lines


def render_chi_map(
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str],
    color_by: Sequence[str] = (),
    title: str = "χ map",
) -> dict:
    """Every plot of the map and ``index.md`` that shows them, under ``out_dir``.

    Returns ``{"page": path, "figures": [paths], "markdown": text of the tables}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colour_keys(ds, color_by)  # unknown names fail before anything is drawn
    figures = [plot_spectra(ds, out / "spectra.png")]
    if ds.sizes["checkpoint"] > 1:
        figures.append(plot_trajectories(ds, out / "trajectories.png"))
    steps = [int(s) for s in ds.checkpoint.values]
    for step in steps:
        figures.append(
            plot_modes(
                ds.sel(checkpoint=step),
                out / f"loadings_step{step}.png",
                title=f"component (head) loadings at step {step}",
            )
        )
        figures.append(plot_embeddings(ds, step, out / f"embeddings_step{step}.png", color_by))
    settings = ds.attrs.get("settings", "{}")
    lines = [
        f"# {title}",
        "",
        f"{ds.sizes['unit']} units × {ds.sizes['component']} components at checkpoints "
        f"{steps}; χ standardized per component before every comparison. Settings: "
        f"`{settings}`.",
        "",
        *summary_markdown(ds, images=True),
        "",
        "## Per checkpoint",
    ]
    for step in steps:
        lines += [
            "",
            f"### Step {step}",
            "",
            f"![loadings](loadings_step{step}.png)",
            "",
            f"![embeddings](embeddings_step{step}.png)",
        ]
    page = out / "index.md"
    page.write_text("\n".join(lines) + "\n")
    tables = "\n".join(summary_markdown(ds))
    return {"page": str(page), "figures": [str(f) for f in figures], "markdown": tables}
