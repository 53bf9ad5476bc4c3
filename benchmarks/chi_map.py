"""The map of a χ store at scale: 20,000 tokens × 18 components × 5 checkpoints.

    python benchmarks/chi_map.py [--units 20000] [--workers 1]

Builds a synthetic χ store (random but structured: four latent patterns over the tokens,
tied to their pattern class and position, loaded on 16 heads + embed + unembed with
loadings that drift, swap order and flip sign over training, each component's row scaled
by its own factor, plus noise), then times the readout end to end as ``patterning chi map``
runs it (``flows.chi_map.map_here``: every checkpoint's modes, per-layer spectra, PCA and
UMAP of the tokens; modes matched across checkpoints; the map written into the store; the
page with its PNGs), then a rerun (every checkpoint's readout found in the store). With
``--workers 2`` the checkpoints' readouts run first in two processes (what the ``chi-map``
flow does with two Dask workers). Prints a table and writes it to
``benchmarks/results/chi_map.md``.

UMAP start-up is timed on its own: umap-learn's functions are compiled by numba on first
use in a process (about 30 s of one core), or loaded from numba's on-disk cache once a
process has compiled them (``estimators.chi_map._cache_umap_compilation``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from tables import publish  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "chi_map.md"
COMPONENTS = [f"L{layer}H{head}" for layer in range(2) for head in range(8)] + [
    "embed",
    "unembed",
]
STEPS = [0, 500, 1000, 2000, 4000]
CLASSES = np.array(["word", "space", "punct", "bracket", "induction"])


def build_store(path: Path, units: int, seed: int = 0) -> None:
    """A store whose χ has known structure (see the module docstring)."""
    from patterning_core.store.chi_store import create_store, write_chi

    rng = np.random.default_rng(seed)
    seq_len = 100
    position = np.arange(units) % seq_len
    pattern_class = CLASSES[rng.choice(len(CLASSES), size=units, p=[0.5, 0.2, 0.15, 0.1, 0.05])]
    vocab = np.array([f"tok{i}" for i in range(60)])
    create_store(
        path,
        checkpoints=STEPS,
        components=COMPONENTS,
        num_chains=1,
        num_draws=2,
        unit_coords={
            "sequence": np.arange(units) // seq_len,
            "position": position,
            "token_id": rng.integers(0, 60, size=units),
            "token_text": vocab[rng.integers(0, 60, size=units)],
            "pattern_class": pattern_class,
        },
        attrs={"store_id": f"bench-{seed}"},
    )
    # latent patterns over tokens: class indicators (smoothed) and a position trend
    patterns = np.stack(
        [
            (pattern_class == "word") + 0.3 * rng.normal(size=units),
            (pattern_class == "space") * (1 + position / seq_len) + 0.3 * rng.normal(size=units),
            (pattern_class == "bracket") + 0.3 * rng.normal(size=units),
            (pattern_class == "induction") * 2 + 0.3 * rng.normal(size=units),
        ]
    )
    base = rng.normal(size=(len(COMPONENTS), 4))
    scale = np.geomspace(1e-3, 10, len(COMPONENTS))
    rng.shuffle(scale)
    for t, step in enumerate(STEPS):
        growth = np.array([3.0, 2.0, 1.5, 0.2 + 0.8 * t])  # the induction pattern grows
        drift = base + 0.1 * t * rng.normal(size=base.shape)
        chi = (drift * growth) @ patterns + 0.5 * rng.normal(size=(len(COMPONENTS), units))
        write_chi(path, step, scale[:, None] * chi)


class Clock:
    """Wall and CPU time (this process and its finished children) of each phase."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def time(self, name: str, fn, *args):
        wall, cpu = time.perf_counter(), self._cpu()
        result = fn(*args)
        self.rows.append((name, time.perf_counter() - wall, self._cpu() - cpu))
        return result


def umap_startup() -> None:
    from patterning_core.estimators.chi_map import umap_embedding

    umap_embedding(np.random.default_rng(0).normal(size=(64, 4)), n_neighbors=8)


def _part(args: tuple[str, int, dict]) -> float:
    from patterning_core.estimators.chi_map import ChiMapSettings
    from patterning_core.store.chi_map import compute_checkpoint_map

    store, step, settings = args
    return compute_checkpoint_map(store, step, ChiMapSettings.from_dict(settings))["seconds"]


def readouts(store: Path, settings: dict, workers: int) -> None:
    jobs = [(str(store), s, settings) for s in STEPS]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_part, jobs))
    else:
        for job in jobs:
            _part(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", default=None, help="keep the store and page in this folder")
    args = parser.parse_args()

    from flows.chi_map import map_here
    from flows.parameters import ChiMapParameters
    from patterning_core.report.chi_map import render_chi_map
    from patterning_core.store.chi_map import write_chi_map

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="chi-map-bench-"))
    shutil.rmtree(work / "chi.zarr", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "chi.zarr"
    built = time.perf_counter()
    build_store(store, args.units)
    built = time.perf_counter() - built

    params = ChiMapParameters(
        store=str(store), out_dir=str(work / "page"), color_by=["position", "token_text"]
    )
    settings = params.settings()
    clock = Clock()
    if args.workers == 1:
        clock.time("UMAP start-up (numba: compile, or load from its cache)", umap_startup)
    where = "1 process" if args.workers == 1 else f"{args.workers} processes, UMAP start-up in each"
    clock.time(
        f"readouts of the {len(STEPS)} checkpoints ({where})",
        readouts,
        store,
        settings.to_dict(),
        args.workers,
    )
    ds = clock.time("the map: stack, match modes, write", write_chi_map, store, settings)
    clock.time("the page (PNGs, index.md)", render_chi_map, ds, params.out_dir, params.color_by)
    wall = sum(r[1] for r in clock.rows)
    cpu = sum(r[2] for r in clock.rows)
    rerun = Clock()
    rerun.time("rerun", map_here, params)
    lines = [
        "# The map of a χ store at scale",
        "",
        f"`python benchmarks/chi_map.py --units {args.units} --workers {args.workers}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs shared with other work: "
        f"load average {os.getloadavg()[0]:.1f} at the end); {args.units} tokens × "
        f"{len(COMPONENTS)} components × {len(STEPS)} checkpoints (synthetic χ store built in "
        f"{built:.1f} s), {params.n_modes} modes, PCA and UMAP (n_neighbors "
        f"{params.umap_neighbors}, seeded, one thread), the page coloured by pattern class, "
        "position and token text.",
        "",
        "| phase | wall time (s) | CPU time (s) |",
        "|---|---:|---:|",
        *[f"| {name} | {w:.1f} | {c:.1f} |" for name, w, c in clock.rows],
        f"| **readout end to end** (what `patterning chi map` does) | **{wall:.1f}** | "
        f"**{cpu:.1f}** |",
        f"| rerun (every checkpoint's readout found in the store; map and page again) | "
        f"{rerun.rows[0][1]:.1f} | {rerun.rows[0][2]:.1f} |",
        "",
        "CPU time counts this process and its worker processes. On a shared machine wall time",
        "above CPU time is time spent waiting for a core; on an idle machine the wall time of a",
        "phase run in one process is about its CPU time.",
        "",
        f"Map written to the store: {dict(ds.sizes)}.",
    ]
    publish(lines, RESULTS)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
