"""How special is the circuit target's choice of cell weights? Random targets of the same
mode space, solved the same way.

    .venv/bin/python scripts/induce_circuit_cells_targets.py --ratio 8 --draws 200 \\
        --out docs/results/induction_patterning/circuit_cells_random_targets

The circuit-cells design (``scripts/induce_circuit_cells.py``) solves the patterning
equation in the span of four cells (sequence kind × predictable by copying), so a target
sets four cell weights and nothing else. Here ``--draws`` random targets in the leading 8
modes of the same χ (``controls.random_mode_target``, extrapolation seeds 0, 1, …; seed 0 is
the design's control_random) are solved exactly as Induce is, at the same ratio, and each
cell's mean training weight is compared with Induce's: how many random targets give the
tokens copying predicts at least Induce's weight. No training. Writes ``<out>.json`` and
``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.feature_extrapolation import alpha_for_ratio, sequence_halves
from patterning_core.estimators.intervention import weights_from_intervention
from patterning_core.experiments.induction.cell_weights import (
    cell_indicators,
    circuit_target,
    solve_cells,
)
from patterning_core.experiments.induction.controls import random_mode_target
from patterning_core.experiments.induction.token_groups import GROUPS, group_weights, token_groups
from tasks.training import model_preset

CONFIG = "docs/examples/induce_wide_circuit_cells.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--ratio", type=float, default=None, help="default: the config's")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    ratio = p.ratio if args.ratio is None else args.ratio
    with xr.open_dataset(p.published_chi) as ds:
        ds = ds.load()
    chi = ds["chi"].transpose("component", "unit")
    n_beta = float(ds.attrs["n_beta"])
    components = [str(c) for c in chi.component.values]
    z = standardize(chi, "component").values
    modes = decompose(chi, "component")
    x = cell_indicators(ds["synthetic"].values, ds["predictable"].values)
    fit_mask, _ = sequence_halves(np.asarray(ds["sequence"].values), 0)
    tokens = load_lm_tokens(p.data, model_preset(p.preset))
    groups = token_groups(tokens.train, tokens.n_synthetic)
    x_train = np.stack([groups[g] for g in GROUPS], axis=-1).astype(np.float64)

    def cell_weights(target: np.ndarray) -> dict:
        sol = solve_cells(z, x, target, n_beta, fit_mask)
        dh = sol["model"].predict(x_train)
        rho = weights_from_intervention(dh, alpha_for_ratio(dh, ratio), "clip")
        return {
            "groups": group_weights(rho, groups),
            "heldout_target_cosine": sol["heldout_target_cosine"],
        }

    induce = cell_weights(circuit_target(components, p.circuit_scores))
    draws = []
    for seed in range(args.draws):
        row = cell_weights(random_mode_target(modes, -1, p.n_leading, seed))
        draws.append({"seed": seed, **row})
        print(f"random target {seed}: {row['groups']}", flush=True)
    table = {g: np.array([d["groups"][g] for d in draws]) for g in GROUPS}
    at_least = {g: int((table[g] >= induce["groups"][g] - 1e-12).sum()) for g in GROUPS}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "config": args.config,
        "ratio": ratio,
        "induce": induce,
        "random": draws,
        "random_at_or_above_induce": at_least,
        "command": " ".join(sys.argv),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Cell weights of the circuit target against {args.draws} random targets",
        "",
        f"Config `{args.config}`, ratio {ratio:g}; random targets in the leading "
        f"{p.n_leading} modes of the same χ, solved in the same four cells. Mean training "
        "weight per cell (weights have mean 1 over the training tokens).",
        "",
        "| | " + " | ".join(g.replace("_", " ") for g in GROUPS) + " |",
        "|---|" + "---:|" * len(GROUPS),
        "| Induce (circuit target) | "
        + " | ".join(f"{induce['groups'][g]:.2f}" for g in GROUPS)
        + " |",
        "| random targets: median | "
        + " | ".join(f"{np.median(table[g]):.2f}" for g in GROUPS)
        + " |",
        "| random targets: 5th–95th percentile | "
        + " | ".join(
            f"{np.percentile(table[g], 5):.2f}–{np.percentile(table[g], 95):.2f}" for g in GROUPS
        )
        + " |",
        f"| random targets at or above Induce (of {args.draws}) | "
        + " | ".join(str(at_least[g]) for g in GROUPS)
        + " |",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
