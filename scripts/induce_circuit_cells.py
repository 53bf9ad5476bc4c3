"""Steer the circuit through cell weights: a design change of target and extrapolator.

    .venv/bin/python scripts/induce_circuit_cells.py \\
        --published docs/results/induction_patterning/natural_wide_from4000/published \\
        --config docs/examples/induce_wide_embed_mode_restricted.json \\
        --train-seed 0 --conditions induce repress --out DIR/seed0

Target: the circuit itself rather than an SVD mode, dμ_C = −(s_C − mean s) over the heads
(s: the reference's later circuit scores, layer-0 previous-token and layer-1 prefix matching,
from the published ``results.json`` beside the config's report; embed and unembed 0): the
heads that later form the circuit lower their localized loss relative to the others.
Extrapolator: the patterning equation nβ·χ̃·dh = dμ solved in the span of four cell
indicators that every training token has (synthetic or natural sequence × predictable by
copying or not; ``token_groups``), so each cell's weight is set by the sum of its probe
units' χ, which averages per-token noise away. Held-out target cosine: fitted on half the
probe sequences, read on the other half. Weights ρ = 1 + α·dĥ/max|dĥ| at the weight ratio
asked (top/bottom decile), from step 0 of the config's training settings with seed
``--train-seed``.

The flow runs the same design (``patterning induce --config
docs/examples/induce_wide_circuit_cells.json``: the same weights bit for bit, so it finds
these runs done); this script trains one condition per process, for side-by-side runs.

Conditions: ``induce`` (dμ), ``repress`` (−dμ), ``control_random`` (a random target in the
leading 8 modes of the same χ, solved the same way), ``control_shuffled`` (the Induce
weights permuted within pattern classes), ``baseline`` (uniform). Runs are memoized like the
flow's (``<runs>/<preset>-w<digest>``). Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import LMTokens, load_lm_tokens
from patterning_core.estimators.feature_extrapolation import (
    decile_ratio,
)
from patterning_core.experiments.induction.metrics import induction_curve
from patterning_core.experiments.induction.natural_weights import natural_weights
from patterning_core.experiments.induction.token_groups import GROUPS, group_weights, token_groups
from patterning_core.experiments.spacing.fin_store import probe_tokens
from tasks.retraining import UNIFORM, save_weights, train_with_weights, weighted_run_dir
from tasks.training import check_training_inputs, model_preset, train_in_run_dir

CONDITIONS = ("baseline", "induce", "repress", "control_random", "control_shuffled")


CHI_CONFIG = "docs/examples/induce_wide_circuit_cells.json"  # the published χ's probes


@dataclass
class CellDesign:
    """The design's weights: ρ ``float32 [N, T − 1]`` per condition (``baseline``: None)
    and per condition its solve's numbers and token-group weights (``summary``)."""

    weights: dict[str, np.ndarray | None]
    summary: dict


def cell_design(
    ds: xr.Dataset, scores: dict[str, float], tokens: LMTokens, ratio: float, seed: int
) -> CellDesign:
    """The flow's weights (``natural_weights`` with the circuit target and cell weights) from
    the published ``ds`` at ``ratio``, its probes rebuilt from :data:`CHI_CONFIG`'s workload."""
    chi_p = InduceParameters(**json.loads(Path(CHI_CONFIG).read_text()))
    config = model_preset(chi_p.preset)
    probes, strings = probe_tokens(chi_p.chi_workload(), config)
    result = natural_weights(
        ds["chi"], float(ds.attrs["n_beta"]), scores, probes, tokens.train, strings,
        ratio=ratio, seed=seed, extrapolator="cells", target="circuit",
        n_synthetic=tokens.n_synthetic,
    )  # fmt: skip
    groups = token_groups(tokens.train, tokens.n_synthetic)
    evaluation = result.summary["extrapolation"]
    summary = {
        name: {
            **evaluation.get("induce" if name == "repress" else name, {}),
            "ratio": decile_ratio(rho),
            "groups": group_weights(rho, groups),
        }
        for name, rho in result.weights.items()
    }
    return CellDesign({"baseline": None, **result.weights}, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", required=True, help="folder with chi_and_probe_weights.nc")
    parser.add_argument("--scores", required=True, help="results.json: reference.later_scores")
    parser.add_argument("--config", required=True, help="induce config: training settings")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0, help="halves, random target, shuffle")
    parser.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    parser.add_argument("--runs", default=".patterning/runs")
    parser.add_argument("--weights-dir", default=".patterning/induce/circuit_cells")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = xr.open_dataset(Path(args.published) / "chi_and_probe_weights.nc")
    scores = json.loads(Path(args.scores).read_text())["reference"]["later_scores"]
    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    train = {**p.train, "seed": args.train_seed}
    config = model_preset(p.preset)
    tokens = load_lm_tokens(p.data, config)
    design = cell_design(ds, scores, tokens, args.ratio, args.seed)
    n_beta = float(ds.attrs["n_beta"])
    rows = []
    for name in CONDITIONS:
        rho = design.weights[name]
        digest = UNIFORM
        row: dict = {"condition": name, **design.summary.get(name, {})}
        if name in args.conditions:
            print(f"training {name} (seed {args.train_seed})", flush=True)
            if rho is None:
                run_dir = weighted_run_dir(args.runs, p.preset, p.data, train, UNIFORM)
                tc = check_training_inputs(p.preset, p.data, train)
                train_in_run_dir(config, tokens, tc, run_dir, title="training loss baseline")
            else:
                run_dir = train_with_weights(
                    p.preset, p.data, train, rho, args.weights_dir, args.runs, tokens, name
                )
        else:
            if rho is not None:
                _, digest = save_weights(rho, args.weights_dir)
            candidate = weighted_run_dir(args.runs, p.preset, p.data, train, digest)
            run_dir = candidate if candidate.is_dir() else None
        if run_dir is not None and any(run_dir.glob("step_*.safetensors")):
            curve = induction_curve(run_dir, config)
            row.update(
                run_dir=str(run_dir),
                formation_step=curve.formation_step,
                last_step=int(curve.steps[-1]),
                best_pms={
                    int(s): round(float(b), 4) for s, b in zip(curve.steps, curve.best, strict=True)
                },
            )
        rows.append(row)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "published": args.published,
        "config": args.config,
        "train_seed": args.train_seed,
        "ratio": args.ratio,
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Circuit target through cell weights, training seed {args.train_seed}",
        "",
        f"χ: `{args.published}` (nβ {n_beta:g}); weights from step 0 at ratio {args.ratio:g}; "
        "formation: best layer-1 prefix matching ≥ 0.3. Cells: mean weight per token group.",
        "",
        "| condition | formation | last step | held-out target cos | "
        + " | ".join(g.replace("_", " ") for g in GROUPS)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(GROUPS),
    ]
    for r in rows:
        form = r.get("formation_step", "—") if "last_step" in r else "not trained"
        cos = r.get("heldout_target_cosine")
        g = r.get("groups", {})
        lines.append(
            f"| {r['condition']} | {'none' if form is None else form} | "
            f"{r.get('last_step', '—')} | "
            f"{'—' if cos is None else f'{cos:.3f}'} | "
            + " | ".join(f"{g[k]:.2f}" if k in g else "1.00" for k in GROUPS)
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
