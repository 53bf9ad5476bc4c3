"""What a design's weights do to the token groups at several doses.

    .venv/bin/python scripts/induce_dose_weights.py \\
        --config docs/examples/induce_wide_embed_mode_from_checkpoint.json \\
        --published docs/results/induction_patterning/natural_wide_embed_mode_from_checkpoint \\
        --ratios 4 8 16 --out docs/results/induction_patterning/from_checkpoint_dose_weights

For each ratio, the design's weights rebuilt from its published χ
(``induce_random_controls.load_published``; refused unless at the design's own ratio the probe
weights equal the published ones) for Induce, Repress, the class shuffle, the flow's random
direction (extrapolation seed 0) and the first permutation of Induce within pattern class ×
sequence kind cells (shuffle seed 0), each condition's mean weight on the four token groups
(``token_groups``: synthetic or natural, predictable by copying or not; weights over their
mean) and its measured decile ratio. Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from induce_random_controls import load_published

from patterning_core.data.token_classes import TokenKinds
from patterning_core.estimators.feature_extrapolation import decile_ratio
from patterning_core.experiments.induction.controls import cell_codes, shuffle_within_classes
from patterning_core.experiments.induction.natural_weights import predict_units
from patterning_core.experiments.induction.token_groups import GROUPS, group_weights, token_groups

CONDITIONS = ("induce", "repress", "control_shuffled", "control_random", "cell_permutation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--published", required=True)
    parser.add_argument("--ratios", type=float, nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    design = load_published(args.config, args.published)
    tokens = design.tokens
    groups = token_groups(tokens.train, tokens.n_synthetic)
    kinds = TokenKinds.from_strings(tokens.token_strings)
    _, class_codes = predict_units([], tokens.train, kinds)
    cells = cell_codes(class_codes, tokens.n_synthetic)
    rows = []
    for ratio in args.ratios:
        result = design.weights(0, ratio)
        weights = {c: result.weights[c] for c in CONDITIONS[:4]}
        weights["cell_permutation"] = shuffle_within_classes(weights["induce"], cells, seed=0)
        for condition, w in weights.items():
            rows.append(
                {
                    "ratio": ratio,
                    "condition": condition,
                    "decile_ratio": decile_ratio(w),
                    **group_weights(w, groups),
                }
            )
        print(f"ratio {ratio:g} described", flush=True)

    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))
    lines = [
        "# Token-group weights of the design's conditions by dose",
        "",
        "Mean weight (weights over their mean) on each token group; `predictable`: copying "
        "predicts the token (its bigram occurred earlier in the context).",
        "",
        "| ratio | condition | decile ratio | " + " | ".join(GROUPS) + " |",
        "|---:|---|---:|" + "---:|" * len(GROUPS),
    ]
    for r in rows:
        groups_cells = " | ".join(f"{r[g]:.2f}" for g in GROUPS)
        lines.append(
            f"| {r['ratio']:g} | {r['condition']} | {r['decile_ratio']:.2f} | {groups_cells} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
