"""Does a substrate learn a spacing fin of its own? The fin read off χ stores of one
model's checkpoints, beyond its initialization, beside two controls that learned nothing.

    .venv/bin/python scripts/fin_substrate_check.py --preset fin_deep \\
        --init .patterning/fin_explore/deep_chi.zarr:0 \\
        --read "step 3,000=.patterning/fin_explore/deep_chi.zarr:3000" \\
               "step 6,000=.patterning/fin_explore/deep_chi_6000.zarr:6000" \\
               "another initialization=.patterning/fin_explore/deep_chi_init1.zarr:0" \\
               "init, SGLD seed 1=.patterning/fin_explore/deep_chi_step0_sampler1.zarr:0" \\
        --out docs/results/spacing/fin_deep/substrate_check

Every ``--read`` is a ``LABEL=STORE:STEP`` χ on the same probe units as ``--init`` (the
model's step-0 χ; ``fin_store.fin_at`` checks the workload). Per read: the fin metric
(largest |Spearman ρ| of run position with a leading mode's loadings), run position decoded
from the χ directions, beyond the loss, and beyond the initialization (``fin.position_decoding``).

"Beyond the initialization" adds the read's χ directions to the initialization's and the
loss and asks how much better the run position is decoded out of fold. Two things raise it
without anything learned: a second noisy measurement of the same structure averages the
SGLD noise down, and any other network's χ adds its own, differently mixed, position
structure. The two controls measure each: the same initialization's χ estimated again with
another SGLD seed, and χ of another untrained network (initialization seed 1) on the same
probe units. A learned fin is a trained checkpoint above both.

A permutation reading is printed beside it: the read's directions shuffled across the space
units (200 times), the rest kept. It breaks what the read shares with the initialization as
well as with the position, so it is not a null for "nothing learned" (the re-estimated
initialization passes it too); it shows only that the statistic's own floor is below 0.

Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.estimators.decomposition import standardize
from patterning_core.experiments.spacing import fin
from patterning_core.experiments.spacing.fin_store import fin_at, fin_inputs
from patterning_core.model.transformer import preset

PERMUTATIONS = 200


def parse_location(text: str) -> tuple[str, int]:
    """``STORE:STEP`` → ``(store, step)``."""
    store, _, step = text.rpartition(":")
    if not store or not step.isdigit():
        raise SystemExit(f"expected STORE:STEP, got {text!r}")
    return store, int(step)


def permutation_reading(
    store: str, step: int, init_standardized: np.ndarray, config, permutations: int = PERMUTATIONS
) -> dict:
    """Beyond-the-initialization with the read's χ columns shuffled across the space units
    (``fin.position_decoding`` on each shuffle; its folds stay those of the reading)."""
    chi, positions, loss, _ = fin_inputs(store, step, config)
    read = standardize(chi, "component").values
    spaces = np.flatnonzero(np.isfinite(positions))
    rng = np.random.default_rng(0)
    shuffled = []
    for _ in range(permutations):
        mixed = read.copy()
        mixed[:, spaces] = read[:, spaces[rng.permutation(spaces.size)]]
        decoded = fin.position_decoding(mixed, positions, loss, baseline=init_standardized)
        shuffled.append(decoded["beyond_init"])
    values = np.array(shuffled)
    return {"mean": float(values.mean()), "sd": float(values.std()), "max": float(values.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--init", required=True, help="STORE:STEP of the model's initialization")
    parser.add_argument("--read", nargs="+", required=True, help="LABEL=STORE:STEP")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = preset(args.preset)
    init = parse_location(args.init)
    rows = []
    init_fin = fin_at(*init, config)
    init_standardized = standardize(fin_inputs(*init, config)[0], "component").values
    rows.append({"label": "initialization", "store": init[0], "step": init[1], **init_fin})
    for item in args.read:
        label, _, location = item.partition("=")
        store, step = parse_location(location)
        read = fin_at(store, step, config, init=init)
        read["permutation"] = permutation_reading(store, step, init_standardized, config)
        rows.append({"label": label, "store": store, "step": step, **read})

    lines = [
        f"# Spacing fin beyond the initialization: `{args.preset}`",
        "",
        "Written by `scripts/fin_substrate_check.py` (see its docstring for the readings):",
        "",
        "    .venv/bin/python scripts/fin_substrate_check.py "
        + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "",
        f"Initialization: `{init[0]}` step {init[1]}; "
        f"space units: {rows[0]['decoding']['space_units']}.",
        "",
        "| χ read | fin metric (mode, null) | run position from χ | beyond the loss "
        "| beyond the initialization | shuffled directions: mean ± sd (max) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        d = row["decoding"]
        beyond = f"{d['beyond_init']:+.3f}" if "beyond_init" in d else "—"
        perm = row.get("permutation")
        shuffled = f"{perm['mean']:+.3f} ± {perm['sd']:.3f} ({perm['max']:+.3f})" if perm else "—"
        lines.append(
            f"| {row['label']} | {row['metric']:.2f} (mode {row['mode']}, {row['null']:.2f}) "
            f"| {d['from_chi']:.2f} | {d['beyond_loss']:+.2f} | {beyond} | {shuffled} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    args.out.with_name(args.out.name + ".json").write_text(
        json.dumps(rows, indent=1, default=float) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
