"""Formation steps of an ``induce`` design at several doses, over training seeds, in one table.

    .venv/bin/python scripts/induce_dose_summary.py \\
        docs/results/induction_patterning/from_checkpoint_to8000_seed1.json \\
        docs/results/induction_patterning/from_checkpoint_dose16_seed1.json … \\
        --out docs/results/induction_patterning/from_checkpoint_dose_seeds

Reads the JSON files ``scripts/induce_random_controls.py`` writes (one per training seed and
dose; a file without ``ratio`` is the design's ratio 4) and reports per seed and dose every
condition's formation step and its ratio to the baseline's, with the reading of
``from_checkpoint_dose_plan.md``: Repress meets its target when it does not form within the
run or forms at ≥ 2× the baseline step; a control is within bounds at 0.8–1.25× (a control
that does not form within the run, when the baseline does, is out of bounds); Induce should
form no later than the baseline. Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONDITIONS = {
    "baseline": "baseline",
    "induce": "Induce",
    "repress": "Repress",
    "control_shuffled": "class shuffle",
    "control_random, extrapolation seed 0": "random direction",
    "induce shuffled within cells, seed 0": "cell permutation",
}
CONTROLS = ("control_shuffled", "control_random, extrapolation seed 0")
CELL = "induce shuffled within cells, seed 0"
BOUNDS = (0.8, 1.25)


def formation_ratio(step: int | None, baseline: int | None) -> float | None:
    """``step / baseline``; None when either did not form within the run."""
    if step is None or baseline is None:
        return None
    return step / baseline


def within_bounds(step: int | None, baseline: int | None) -> bool | None:
    """A control's formation within 0.8–1.25× of the baseline's (None: baseline not formed,
    so undefined unless the control did not form either, which keeps it with the baseline)."""
    if baseline is None:
        return True if step is None else None
    if step is None:
        return False
    return BOUNDS[0] <= step / baseline <= BOUNDS[1]


def repress_meets(step: int | None, baseline: int | None) -> bool | None:
    """Repress's target: not formed within the run, or at ≥ 2× the baseline step."""
    if baseline is None:
        return None
    return step is None or step >= 2 * baseline


def run_steps(config_path: str) -> int:
    """The training steps of an induce flow config (where runs end without ``--steps``)."""
    return int(json.loads(Path(config_path).read_text())["train"]["steps"])


def dose_row(data: dict) -> dict:
    """One seed and dose: formation steps, ratios and the plan's verdicts."""
    steps = {r["name"]: r["formation_step"] for r in data["rows"]}
    base = steps["baseline"]
    row = {
        "seed": data["train_seed"],
        "ratio": data.get("ratio", 4.0),
        "run_end": data.get("steps") or run_steps(data["config"]),
        "formation": {k: steps[k] for k in CONDITIONS if k in steps},
        "ratio_to_baseline": {k: formation_ratio(steps[k], base) for k in CONDITIONS if k in steps},
        "repress_meets_target": repress_meets(steps["repress"], base),
        "controls_within_bounds": {
            k: within_bounds(steps[k], base) for k in (*CONTROLS, CELL) if k in steps
        },
        "induce_no_later": None
        if base is None
        else (steps["induce"] is not None and steps["induce"] <= base),
    }
    return row


def cell(row: dict, key: str) -> str:
    """A condition's formation step and ratio; "—" where the condition was not trained."""
    if key not in row["formation"]:
        return "—"
    step, ratio, end = row["formation"][key], row["ratio_to_baseline"][key], row["run_end"]
    if step is None:
        return f"none by {end:,}"
    return f"{step:,}" + ("" if ratio is None else f" ({ratio:.2f}×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON files of induce_random_controls.py")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    rows = sorted(
        (dose_row(json.loads(Path(f).read_text())) for f in args.files),
        key=lambda r: (r["seed"], r["ratio"]),
    )
    lines = [
        "# Formation by dose, re-weighted from the checkpoint",
        "",
        "Formation step (first checkpoint with best layer-1 prefix matching ≥ 0.3) and its ratio "
        "to the seed's baseline; Repress's target: none within the run or ≥ 2×; controls "
        "within 0.8–1.25×.",
        "",
        "| seed | ratio | run to | "
        + " | ".join(CONDITIONS.values())
        + " | Repress target | controls in bounds |",
        "|---:|---:|---:|" + "---|" * len(CONDITIONS) + "---|---|",
    ]
    for r in rows:
        cells = " | ".join(cell(r, k) for k in CONDITIONS)
        bounds = r["controls_within_bounds"]
        inside = sum(v is True for v in bounds.values())
        lines.append(
            f"| {r['seed']} | {r['ratio']:g} | {r['run_end']:,} | {cells} | "
            f"{ {True: 'met', False: 'missed', None: 'undefined'}[r['repress_meets_target']] } | "
            f"{inside} of {len(bounds)} |"
        )
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"files": args.files, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
