"""What sets a re-weighting's effect on the circuit? Every weighting of the from-checkpoint
rank tests, its effect on each training seed, and what χ and the token groups say about it.

    .venv/bin/python scripts/induce_direction_effects.py \\
        --config docs/examples/induce_wide_embed_mode_from_checkpoint.json \\
        --published docs/results/induction_patterning/natural_wide_embed_mode_from_checkpoint \\
        --tests docs/results/induction_patterning/from_checkpoint_rank_test.json \\
                docs/results/induction_patterning/from_checkpoint_rank_test_seed1.json \\
                docs/results/induction_patterning/from_checkpoint_rank_test_seed2.json \\
        --out docs/results/induction_patterning/from_checkpoint_direction_effects

An analysis after the fact (no plan was written for it). For Induce, Repress, the shuffled
control and the 20 random directions (extrapolation seeds 0–19), the weights are rebuilt
from the design's published χ (``induce_random_controls.design_chi``; refused unless the
recomputed probe weights equal the published ones); the effect of a weighting on a seed is
its best layer-1 prefix matching at ``--offset`` minus that seed's baseline, read from the
rank tests' JSON.
Per weighting it reports

- ``predicted_along_induce``: χ's first-order shift of the components' localized losses
  (``loop.predicted_shift``, nβ·χ·dh over the probes) projected on Induce's (its norm for
  Induce): how much of what Induce is predicted to do the weighting is predicted to do;
- ``predicted_on_scores``: the same shift projected on the heads' later circuit scores
  (layer-1 prefix matching, layer-0 previous-token; unit vector over the components);
- the mean weight of each token group (``token_groups``) and the late-over-early ratio of
  its position profile;

then the rank correlation (Spearman) of the effects between seeds over the weightings (are
effects a property of the weighting?), and of the mean effect over seeds with each
property, over the 20 random directions. Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from induce_random_controls import load_published  # the sibling script's reading of the design

from patterning_core.experiments.induction.loop import predicted_shift
from patterning_core.experiments.induction.position_profile import (
    position_profile,
    profile_summary,
)
from patterning_core.experiments.induction.token_groups import GROUPS, group_weights, token_groups

RANDOM = "control_random, extrapolation seed {}"
FLOW_NAMES = {"induce": "induce", "repress": "repress", "control_shuffled": "control_shuffled"}


def effects(rows: list[dict], offset: str) -> dict[str, float]:
    """``{weighting: best pms at offset − the baseline's}`` of one seed's rank test (the
    flow's control_random of seed 0 is extrapolation seed 0)."""
    values = {r["name"].split(" (")[0]: r["best_pms_after_weights"][offset] for r in rows}
    if "control_random" in values:
        values[RANDOM.format(0)] = values.pop("control_random")
    base = values.pop("baseline")
    return {name: value - base for name, value in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--published", required=True)
    parser.add_argument("--tests", nargs="+", required=True, help="rank tests' JSON, per seed")
    parser.add_argument("--offset", default="+1000")
    parser.add_argument("--directions", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    d = load_published(args.config, args.published)
    chi, n_beta, scores, tokens = d.chi, d.n_beta, d.scores, d.tokens
    chi_raw = chi.transpose("component", "unit").values
    components = [str(c) for c in chi.component.values]
    score_vector = np.array([scores.get(c, 0.0) for c in components])
    score_unit = score_vector / np.linalg.norm(score_vector)
    groups = token_groups(tokens.train, tokens.n_synthetic)

    def describe(train_weights: np.ndarray, probe_rho: np.ndarray | None) -> dict:
        row = dict(group_weights(train_weights, groups))
        row["late_over_early"] = profile_summary(position_profile(train_weights))["late_over_early"]
        if probe_rho is not None:
            row["predicted"] = predicted_shift(chi_raw, probe_rho, n_beta)
        return row

    design = d.weights(0)
    rows: dict[str, dict] = {}
    for name in FLOW_NAMES:
        rho = design.probe.get(f"rho_{name}")
        rows[name] = describe(design.weights[name], rho)
    for s in range(args.directions):
        result = design if s == 0 else d.weights(s)
        rows[RANDOM.format(s)] = describe(
            result.weights["control_random"], result.probe["rho_control_random"]
        )
        print(f"direction {s} described", flush=True)
    induce_unit = rows["induce"]["predicted"] / np.linalg.norm(rows["induce"]["predicted"])
    for row in rows.values():
        predicted = row.pop("predicted", None)
        row["predicted_along_induce"] = (
            None if predicted is None else float(predicted @ induce_unit)
        )
        row["predicted_on_scores"] = None if predicted is None else float(predicted @ score_unit)

    seeds = {}
    for file in args.tests:
        data = json.loads(Path(file).read_text())
        seeds[str(data.get("train_seed", 0))] = effects(data["rows"], args.offset)
    for name, row in rows.items():
        row["effect"] = {seed: e.get(name) for seed, e in seeds.items()}
        known = [v for v in row["effect"].values() if v is not None]
        row["mean_effect"] = float(np.mean(known)) if known else None

    names = [n for n in rows if all(rows[n]["effect"][s] is not None for s in seeds)]
    between_seeds = {
        f"{a}-{b}": float(
            spearmanr([rows[n]["effect"][a] for n in names], [rows[n]["effect"][b] for n in names])[
                0
            ]
        )
        for a, b in combinations(seeds, 2)
    }
    randoms = [RANDOM.format(s) for s in range(args.directions)]
    properties = [*GROUPS, "late_over_early", "predicted_along_induce", "predicted_on_scores"]
    with_effect = {
        prop: float(
            spearmanr([rows[n][prop] for n in randoms], [rows[n]["mean_effect"] for n in randoms])[
                0
            ]
        )
        for prop in properties
    }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "offset": args.offset,
        "tests": args.tests,
        "rows": rows,
        "spearman_effect_between_seeds": between_seeds,
        "spearman_mean_effect_with_property_over_random": with_effect,
        "weightings_compared_between_seeds": len(names),
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    seed_cols = " | ".join(f"seed {s}" for s in seeds)
    lines = [
        f"# Re-weightings from step {d.p.weights_from_step}: effect at {args.offset} per seed, "
        "and what predicts it",
        "",
        "Effect: best layer-1 prefix matching minus the seed's baseline. Group columns: mean "
        "weight over the mean (synthetic/natural sequences, predictable by copying or not). "
        "χ columns: first-order shift nβ·χ·dh projected on Induce's and on the heads' circuit "
        "scores. An analysis after the fact (`scripts/induce_direction_effects.py`).",
        "",
        f"| weighting | {seed_cols} | mean | syn. pred. | syn. other | nat. pred. | nat. other "
        "| late/early | χ along Induce | χ on scores |",
        "|---|" + "---:|" * (len(seeds) + 8),
    ]

    def fmt(v, spec=".3f"):
        return "—" if v is None else format(v, spec)

    for name, row in rows.items():
        cells = " | ".join(fmt(row["effect"][s], "+.3f") for s in seeds)
        lines.append(
            f"| {name} | {cells} | {fmt(row['mean_effect'], '+.3f')} | "
            + " | ".join(fmt(row.get(g)) for g in GROUPS)
            + f" | {fmt(row['late_over_early'])} | {fmt(row['predicted_along_induce'], '.2e')} | "
            f"{fmt(row['predicted_on_scores'], '.2e')} |"
        )
    lines += [
        "",
        f"Spearman between seeds over the {len(names)} weightings: "
        + ", ".join(f"{k}: {v:+.2f}" for k, v in between_seeds.items())
        + ".",
        "",
        "Spearman of the mean effect with each property over the random directions: "
        + ", ".join(f"{k}: {v:+.2f}" for k, v in with_effect.items())
        + ".",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
