"""χ stores shaped like the demo's, built in a second from synthetic statistics.

The layout is the demo's (16 heads + embed + unembed, checkpoints 1000/2000/3000, unit
coordinates ``sequence, position, token_id, token_text, pattern_class``); the statistics
are random numbers of the right shapes, written shard by shard through ``write_shard`` and
assembled by ``assemble_chi`` exactly as a run does. Tests that query χ compare against
numpy on the raw arrays, so the values need not come from SGLD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import assemble_chi, create_store, write_shard

COMPONENTS = [f"L{layer}H{head}" for layer in range(2) for head in range(8)] + [
    "embed",
    "unembed",
]
CHECKPOINTS = [1000, 2000, 3000]
CHAINS = 2
DRAWS = 3
CONFIG = SamplerConfig(
    step_size=1e-3,
    n_beta=30.0,
    localization=300.0,
    num_chains=CHAINS,
    num_draws=DRAWS,
    batch_size=16,
)
_VOCAB = ["def", " x", " =", " (", ")", ":", "\n", "    ", " return", " y", "_", "1"]


def unit_coords(n_seqs: int = 3, length: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels of ``n_seqs × length`` probe units; a token repeated earlier in its
    sequence is an ``induction`` target, whitespace ``whitespace``, the rest ``other``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(_VOCAB), size=(n_seqs, length))
    ids[:, length // 2 :] = ids[:, : length - length // 2]  # second half repeats the first
    seq, pos = np.meshgrid(np.arange(n_seqs), np.arange(1, length + 1), indexing="ij")
    classes = []
    for row in ids:
        for t, token in enumerate(row):
            if token in row[:t]:
                classes.append("induction")
            elif _VOCAB[token].strip() == "":
                classes.append("whitespace")
            else:
                classes.append("other")
    flat = ids.ravel()
    return {
        "sequence": seq.ravel(),
        "position": pos.ravel(),
        "token_id": flat,
        "token_text": np.array([_VOCAB[i] for i in flat], dtype=object),
        "pattern_class": np.array(classes, dtype=object),
    }


def shard_stats(
    components: list[str], chains: list[int], units: int, seed: int, *, full: bool = True
) -> xr.Dataset:
    """Statistics of one shard (``components × chains``, with the full run if ``full``)."""
    rng = np.random.default_rng(seed)
    c, k = len(components), len(chains)
    data = {
        "count": (("component", "chain"), np.full((c, k), float(DRAWS))),
        "phi_mean": (("component", "chain"), rng.normal(0.1, 0.02, (c, k))),
        "phi_m2": (("component", "chain"), rng.uniform(0.01, 0.02, (c, k))),
        "probe_mean": (("component", "chain", "unit"), rng.normal(2.0, 0.5, (c, k, units))),
        "probe_comoment": (("component", "chain", "unit"), rng.normal(0.0, 0.01, (c, k, units))),
        "loss_trace": (("component", "chain", "draw"), rng.normal(2.0, 0.1, (c, k, DRAWS))),
    }
    if full:
        data |= {
            "full_count": (("chain",), np.full(k, float(DRAWS))),
            "full_loss_mean": (("chain",), rng.normal(2.1, 0.05, k)),
            "full_probe_mean": (("chain", "unit"), rng.normal(2.0, 0.5, (k, units))),
            "full_loss_trace": (("chain", "draw"), rng.normal(2.1, 0.1, (k, DRAWS))),
        }
    coords = {"component": components, "chain": chains, "draw": np.arange(DRAWS)}
    return xr.Dataset(data, coords=coords, attrs={"init_loss": 2.0})


def new_store(
    path: str | Path,
    *,
    checkpoints: list[int] = CHECKPOINTS,
    components: list[str] = COMPONENTS,
    units: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> None:
    create_store(
        path,
        checkpoints=checkpoints,
        components=components,
        num_chains=CHAINS,
        num_draws=DRAWS,
        unit_coords=unit_coords() if units is None else units,
        attrs={"sampler_config": CONFIG.to_json(), "n_beta": CONFIG.n_beta, **(attrs or {})},
    )


def shards(components: list[str], units: int, seed: int) -> list[xr.Dataset]:
    """Every shard of one checkpoint: one per chain, each with all components and the
    full run."""
    return [shard_stats(components, [k], units, seed * 100 + k) for k in range(CHAINS)]


def complete_store(
    path: str | Path,
    *,
    seed: int = 0,
    checkpoints: list[int] = CHECKPOINTS,
    components: list[str] = COMPONENTS,
    units: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> Path:
    """A store with every checkpoint written and χ assembled."""
    units = unit_coords() if units is None else units
    new_store(path, checkpoints=checkpoints, components=components, units=units, attrs=attrs)
    n_units = len(units["position"])
    for i, step in enumerate(checkpoints):
        for shard in shards(components, n_units, seed * 1000 + i):
            write_shard(path, step, shard)
        assemble_chi(path, step)
    return Path(path)


def demo_stores(root: str | Path) -> dict[str, Path]:
    """``.patterning/demo/chi.zarr`` (the demo's store) and ``.patterning/induce/chi.zarr``
    (χ of a retrained model on the same probe tokens) under ``root``."""
    root = Path(root)
    return {
        "demo": complete_store(root / ".patterning" / "demo" / "chi.zarr", seed=0),
        "induce": complete_store(root / ".patterning" / "induce" / "chi.zarr", seed=1),
    }
