"""Does the weights' profile over context positions, rather than χ, decide formation?

    .venv/bin/python scripts/induce_position_profile.py \\
        --config docs/examples/induce_wide_embed_mode_restricted.json \\
        --weights .patterning/induce/wide_formation/weights/4bfacd427d50d8e3.npy \\
        --train induce_position --out docs/results/induction_patterning/position_profile

Reads every weights file given (``--weights``, optionally ``NAME=PATH``), with the formation
step of its retrained run where that run exists (the run folder is found from the config's
training settings and the file's digest, as the flow names it) and its position profile
(``position_profile``: mean weight per context position over the mean; the first and last
quarter). ``--train NAME``: retrain the config's preset, seed and data order with the
position profile of weights ``NAME`` alone (``position_only_weights``, every sequence
weighted the same way), from the same initialization, and report its formation step: if it
matches the formation of the weighting it came from, the profile, not the per-token
content χ chose, decided it. Runs are memoized and resumed like the flow's
(``<runs>/<preset>-w<digest>``); two invocations with different ``--train`` can run side by
side. Writes ``<out>.md`` and ``<out>.json`` (every run found, trained or not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.experiments.induction.metrics import induction_curve
from patterning_core.experiments.induction.position_profile import (
    position_only_weights,
    position_profile,
    profile_summary,
)
from patterning_core.model.checkpoints import file_sha256
from tasks.retraining import UNIFORM, load_weights, save_weights, weighted_run_dir
from tasks.training import check_training_inputs, model_preset, train_in_run_dir


def run_row(name: str, run_dir: Path, profile: np.ndarray | None, config) -> dict:
    row = {"name": name, "run_dir": str(run_dir)}
    if profile is not None:
        row.update(profile_summary(profile))
    if run_dir.is_dir() and any(run_dir.glob("step_*.safetensors")):
        curve = induction_curve(run_dir, config)
        row.update(
            formation_step=curve.formation_step,
            last_step=int(curve.steps[-1]),
            final_best_pms=float(curve.best[-1]),
        )
    return row


def _number(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an induce flow config (JSON)")
    parser.add_argument("--weights", nargs="+", required=True, help="[NAME=]PATH of .npy ρ")
    parser.add_argument("--train", nargs="*", default=[], help="NAMEs to retrain by profile")
    parser.add_argument("--runs", default=".patterning/runs")
    parser.add_argument("--weights-dir", default=".patterning/induce/position_profile")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    seed = p.seeds[0]
    train = {**p.train, "seed": seed}
    tc = check_training_inputs(p.preset, p.data, train)
    config = model_preset(p.preset)
    tokens = load_lm_tokens(p.data, config)
    shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
    named = dict(w.split("=", 1) if "=" in w else (Path(w).stem[:8], w) for w in args.weights)

    rows = [
        run_row(
            "uniform", weighted_run_dir(args.runs, p.preset, p.data, train, UNIFORM), None, config
        )
    ]
    profiles = {}
    for name, path in named.items():
        digest = file_sha256(path)
        profiles[name] = position_profile(load_weights(path, digest, shape).numpy())
        run_dir = weighted_run_dir(args.runs, p.preset, p.data, train, digest)
        rows.append(run_row(name, run_dir, profiles[name], config))

    for name in args.train:
        weights = position_only_weights(profiles[name], shape[0])
        path, digest = save_weights(weights, args.weights_dir)
        run_dir = weighted_run_dir(args.runs, p.preset, p.data, train, digest)
        torch.set_num_threads(args.threads)
        print(f"training {name}_position in {run_dir}", flush=True)
        train_in_run_dir(
            config,
            tokens,
            tc,
            run_dir,
            weights=torch.from_numpy(weights),
            title=f"training loss (unweighted) {name} position profile",
        )
        rows.append(run_row(f"{name}_position", run_dir, position_profile(weights), config))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))
    lines = [
        "# Formation against the weights' profile over context positions",
        "",
        f"Config `{args.config}`, seed {seed}; formation: the best layer-1 head's prefix "
        "matching reaches 0.3. Profile: mean weight per context position over the overall "
        "mean, first and last quarter of the positions. `<name>_position`: retrained with "
        "that profile alone (`position_only_weights`), same initialization and data order.",
        "",
        "| weights | first quarter | last quarter | late/early | formation step | "
        "best prefix matching at the last step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        form = r.get("formation_step", "—") if "last_step" in r else "not trained"
        lines.append(
            f"| {r['name']} | {_number(r, 'first_quarter')} | {_number(r, 'last_quarter')} | "
            f"{_number(r, 'late_over_early')} | {form if form is not None else 'none'} | "
            f"{_number(r, 'final_best_pms')} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
