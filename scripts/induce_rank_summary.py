"""Rank tests of Induce against same-dose controls, over training seeds, in one table.

    .venv/bin/python scripts/induce_rank_summary.py \\
        docs/results/induction_patterning/from_checkpoint_rank_test.json \\
        docs/results/induction_patterning/from_checkpoint_rank_test_seed1.json \\
        docs/results/induction_patterning/from_checkpoint_rank_test_seed2.json \\
        --out docs/results/induction_patterning/from_checkpoint_rank_test_seeds

Reads the JSON files ``scripts/induce_random_controls.py`` writes (one per training seed)
and, at each offset after the weights start (+k), reports the baseline, Induce, Repress,
the shuffled control and the controls' mean ± sd, max and min of the best layer-1 prefix
matching (``--controls``: the rows whose name starts so; default the random directions,
``"induce shuffled within cells"`` for the cell permutations); how many controls reach
Induce (≥) and Repress (≤); the one-sided
rank p-values (1 + that count) / (1 + directions); and Fisher's combination of a condition's
per-seed p-values (−2 Σ ln p against χ² with 2·seeds degrees of freedom). Writes
``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.estimators.statistics import fisher_combined, rank_p_value


def seed_summary(rows: list[dict], offset: str, controls: str = "control_random") -> dict:
    """One seed's numbers at ``offset`` from its rows (names as the controls script writes
    them; the flow's control_random is the random direction of extrapolation seed 0)."""

    def value(prefix: str) -> float:
        (found,) = [r for r in rows if r["name"].split(" (")[0] == prefix]
        return found["best_pms_after_weights"][offset]

    values = np.array(
        [r["best_pms_after_weights"][offset] for r in rows if r["name"].startswith(controls)]
    )
    induce, repress = value("induce"), value("repress")
    above = int((values >= induce).sum())
    below = int((values <= repress).sum())
    return {
        "baseline": value("baseline"),
        "induce": induce,
        "repress": repress,
        "control_shuffled": value("control_shuffled"),
        "controls": int(values.size),
        "controls_mean": float(values.mean()),
        "controls_sd": float(values.std(ddof=1)),
        "controls_max": float(values.max()),
        "controls_min": float(values.min()),
        "controls_at_or_above_induce": above,
        "controls_at_or_below_repress": below,
        "induce_p": rank_p_value(induce, list(values)),
        "repress_p": rank_p_value(repress, list(values), greater=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="the controls script's JSON, one per seed")
    parser.add_argument("--offsets", nargs="+", default=["+250", "+500", "+1000"])
    parser.add_argument("--controls", default="control_random", help="name prefix of the controls")
    parser.add_argument("--label", default="random directions", help="the controls, in words")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    seeds = []
    for file in args.files:
        data = json.loads(Path(file).read_text())
        seeds.append({"file": file, "train_seed": data.get("train_seed", 0), "rows": data["rows"]})
    table = {
        offset: {
            str(s["train_seed"]): seed_summary(s["rows"], offset, args.controls) for s in seeds
        }
        for offset in args.offsets
    }
    combined = {
        offset: {
            condition: fisher_combined([v[f"{condition}_p"] for v in by_seed.values()])
            for condition in ("induce", "repress")
        }
        for offset, by_seed in table.items()
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "files": args.files,
                "controls": args.controls,
                "by_offset": table,
                "fisher": combined,
            },
            indent=1,
        )
    )
    lines = [
        f"# Induce and Repress against {args.label}, per training seed",
        "",
        f"Best layer-1 prefix matching k steps after the weights start (+k). `≥ Induce`: "
        f"{args.label} at or above Induce; `≤ Repress`: at or below Repress; p = (1 + count) / "
        "(1 + controls), one-sided; Fisher: the seeds' p combined.",
        "",
    ]
    for offset, by_seed in table.items():
        lines += [
            f"## {offset}",
            "",
            "| seed | baseline | Induce | Repress | shuffled | controls mean ± sd "
            "| controls max, min | ≥ Induce | p | ≤ Repress | p |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for seed, v in by_seed.items():
            lines.append(
                f"| {seed} | {v['baseline']:.3f} | {v['induce']:.3f} | {v['repress']:.3f} | "
                f"{v['control_shuffled']:.3f} | "
                f"{v['controls_mean']:.3f} ± {v['controls_sd']:.3f} | "
                f"{v['controls_max']:.3f}, {v['controls_min']:.3f} | "
                f"{v['controls_at_or_above_induce']}/{v['controls']} | "
                f"{v['induce_p']:.3f} | "
                f"{v['controls_at_or_below_repress']}/{v['controls']} | "
                f"{v['repress_p']:.3f} |"
            )
        c = combined[offset]
        lines += [
            "",
            f"Fisher over seeds: Induce p = {c['induce']:.4f}, Repress p = {c['repress']:.4f}.",
            "",
        ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
