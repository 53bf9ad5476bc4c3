"""What decides formation under re-weighting: the weights' profile over context positions,
their weight on the tokens where induction pays, or the per-token content χ chose?

    .venv/bin/python scripts/induce_formation_levers.py \\
        --config docs/examples/induce_wide_embed_mode_restricted.json \\
        --weights induce=.patterning/induce/wide_formation/weights/4bfacd427d50d8e3.npy \\
        --profile induce --scale synthetic_predictable=0.8 \\
        --out docs/results/induction_patterning/formation_levers

Reads every weights file given (``--weights``, ``NAME=PATH``) with the formation step of its
retrained run where that run exists (the folder found from the config's training settings and
the file's digest, as the flow names it), its position profile (``position_profile``: mean
weight per context position over the mean, first and last quarter) and its mean weight on
each token group (``token_groups``: synthetic or natural sequence, predictable by copying or
not). Then retrains, from the same initialization and data order, with

- ``--profile NAME``: the position profile of weights ``NAME`` alone
  (``position_only_weights``), and
- ``--scale GROUP=FACTOR``: one token group's weight times FACTOR, 1 elsewhere
  (``group_scaled_weights``),
- ``--half GROUP:HALF=FACTOR[/REST]``: half of one group's units times FACTOR, the group's
  other half times REST (default 1), 1 elsewhere (``half_scaled_weights``), HALF ``high`` or
  ``low`` the units with the highest or lowest ``--score`` (``bigram_surprise``, the
  default: how rare the bigram is given its first token, counted over the natural sequences;
  or an in-context feature of ``context_features``, e.g. ``prev_distance``), ``random`` a
  random half (what shuffling either across the group gives),
- ``--neutral NAME[^POWER|@RATIO]``: weights ``NAME`` made class-neutral
  (``controls.class_neutral``: every pattern class at mean weight 1, ratios within a class
  raised to POWER, or to the power that gives the dose ratio RATIO); ``--shuffle ITEM``
  (an item of ``--neutral``) also retrains those weights shuffled within the pattern
  classes (``controls.shuffle_within_classes``, control b of the issue),

and reports their formation steps beside the others. Runs are memoized and resumed like the
flow's (``<runs>/<preset>-w<digest>``); invocations with different retrainings can run side
by side, and a last one without any reads them all. Writes ``<out>.md`` and ``<out>.json``.
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
from patterning_core.data.context_features import FEATURE_NAMES, context_features
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.data.token_classes import TokenKinds
from patterning_core.estimators.feature_extrapolation import decile_ratio
from patterning_core.experiments.induction.controls import (
    class_neutral,
    class_neutral_at_ratio,
    shuffle_within_classes,
)
from patterning_core.experiments.induction.metrics import induction_curve
from patterning_core.experiments.induction.natural_weights import predict_units
from patterning_core.experiments.induction.position_profile import (
    position_only_weights,
    position_profile,
    profile_summary,
)
from patterning_core.experiments.induction.token_groups import (
    GROUPS,
    bigram_surprise,
    group_scaled_weights,
    group_weights,
    half_scaled_weights,
    token_groups,
)
from patterning_core.model.checkpoints import file_sha256
from tasks.retraining import UNIFORM, load_weights, train_with_weights, weighted_run_dir
from tasks.training import model_preset


def unit_score(tokens, name: str, chunk: int = 4096) -> np.ndarray:
    """``[N, T − 1]`` score of every training unit: ``bigram_surprise`` (counted over the
    natural sequences) or an in-context feature of the unit's token."""
    if name == "bigram_surprise":
        natural = np.arange(tokens.train.shape[0] - tokens.n_synthetic)
        return bigram_surprise(tokens.train, rows=natural)
    if name not in FEATURE_NAMES:
        raise SystemExit(f"--score {name}: use bigram_surprise or one of {FEATURE_NAMES}")
    parts = []
    for i in range(0, tokens.train.shape[0], chunk):
        found = getattr(context_features(tokens.train[i : i + chunk]), name)
        parts.append(found[:, 1:].double().numpy())  # unit (b, t) is token t + 1
    return np.concatenate(parts)


def describe(name: str, weights: np.ndarray | None, groups: dict, run_dir: Path, config) -> dict:
    """One table row: the weights' profile and group weights, the run's formation."""
    row: dict = {"name": name, "run_dir": str(run_dir)}
    if weights is not None:
        row.update(profile_summary(position_profile(weights)))
        row["dose_ratio"] = decile_ratio(weights)
        row["groups"] = group_weights(weights, groups)
    if run_dir.is_dir() and any(run_dir.glob("step_*.safetensors")):
        curve = induction_curve(run_dir, config)
        row.update(
            formation_step=curve.formation_step,
            last_step=int(curve.steps[-1]),
            final_best_pms=float(curve.best[-1]),
        )
        log = run_dir / "train_log.json"
        if log.is_file():  # unweighted validation loss at the last step
            row["heldout_loss"] = float(json.loads(log.read_text())["val_loss"][-1])
    return row


def _number(row: dict, key: str) -> str:
    value = row.get(key, row.get("groups", {}).get(key))
    return "—" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an induce flow config (JSON)")
    parser.add_argument("--weights", nargs="*", default=[], help="NAME=PATH of .npy ρ")
    parser.add_argument("--profile", nargs="*", default=[], help="NAMEs: retrain by profile")
    parser.add_argument("--scale", nargs="*", default=[], help="GROUP=FACTOR: retrain")
    parser.add_argument("--half", nargs="*", default=[], help="GROUP:HALF=FACTOR: retrain")
    parser.add_argument("--score", default="bigram_surprise", help="what --half ranks by")
    parser.add_argument("--neutral", nargs="*", default=[], help="NAME[^POWER|@RATIO]: retrain")
    parser.add_argument("--shuffle", nargs="*", default=[], help="--neutral items: shuffled too")
    parser.add_argument("--seed", type=int, help="training seed (default: the config's first)")
    parser.add_argument("--runs", default=".patterning/runs")
    parser.add_argument("--weights-dir", default=".patterning/induce/formation_levers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    seed = p.seeds[0] if args.seed is None else args.seed
    train = {**p.train, "seed": seed}
    config = model_preset(p.preset)
    tokens = load_lm_tokens(p.data, config)
    shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
    groups = token_groups(tokens.train, tokens.n_synthetic)
    torch.set_num_threads(args.threads)

    def run_dir_of(digest: str) -> Path:
        return weighted_run_dir(args.runs, p.preset, p.data, train, digest)

    rows = [describe("uniform", None, groups, run_dir_of(UNIFORM), config)]
    named = {}
    for item in args.weights:
        name, path = item.split("=", 1)
        digest = file_sha256(path)
        named[name] = load_weights(path, digest, shape).numpy()
        rows.append(describe(name, named[name], groups, run_dir_of(digest), config))

    retrain = {
        f"{n}_position": position_only_weights(position_profile(named[n]), shape[0])
        for n in args.profile
    }
    for item in args.scale:
        group, factor = item.split("=", 1)
        retrain[f"{group}×{factor}"] = group_scaled_weights(groups, group, float(factor))
    if args.half:
        score = unit_score(tokens, args.score)
    for item in args.half:
        chosen, factors = item.split("=", 1)
        group, half = chosen.split(":", 1)
        factor, _, rest = factors.partition("/")
        weights = half_scaled_weights(
            groups, group, score, half, float(factor), seed=seed, rest=float(rest or 1.0)
        )
        by = "" if half == "random" else f" by {args.score}"
        rest_label = f", other half×{rest}" if rest else ""
        retrain[f"{group} {half} half{by}×{factor}{rest_label}"] = weights
    if args.neutral:
        kinds = TokenKinds.from_strings(tokens.token_strings)
        _, class_codes = predict_units([], tokens.train, kinds)
    for item in args.neutral:
        if "@" in item:
            name, _, ratio = item.partition("@")
            neutral, power = class_neutral_at_ratio(named[name], class_codes, float(ratio))
            label = f"{name} class-neutral at ratio {ratio} (power {power:.2f})"
        else:
            name, _, power = item.partition("^")
            neutral = class_neutral(named[name], class_codes, float(power or 1.0))
            label = f"{name} class-neutral" + (f"^{power}" if power else "")
        retrain[label] = neutral
        if item in args.shuffle:
            retrain[f"{label}, shuffled within classes"] = shuffle_within_classes(
                neutral, class_codes, seed=seed
            )
    for name, weights in retrain.items():
        print(f"training {name}", flush=True)
        run_dir = train_with_weights(
            p.preset, p.data, train, weights, args.weights_dir, args.runs, tokens, name
        )
        rows.append(describe(name, weights, groups, run_dir, config))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(
        json.dumps({"config": args.config, "seed": seed, "rows": rows}, indent=1)
    )
    columns = ["heldout_loss", "dose_ratio", "first_quarter", "last_quarter", *GROUPS]
    lines = [
        "# Formation against what the weights do",
        "",
        f"Config `{args.config}`, seed {seed}, same initialization and data order for every "
        "run; formation: the best layer-1 head's prefix matching reaches 0.3. Weights divided "
        "by their mean; held-out loss: unweighted validation loss at the last step; "
        "dose ratio: the top decile's mean weight over the bottom decile's; "
        "position quarters: mean weight over the first and last quarter of the context "
        "positions; groups: mean weight on synthetic / natural sequences' tokens that "
        "copying predicts (predictable) or not (other).",
        "",
        "| weights | formation step | best prefix matching, last step | "
        + " | ".join(c.replace("_", " ") for c in columns)
        + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for r in rows:
        form = r.get("formation_step") if "last_step" in r else "not trained"
        lines.append(
            f"| {r['name']} | {'none' if form is None else form} | "
            f"{_number(r, 'final_best_pms')} | " + " | ".join(_number(r, c) for c in columns) + " |"
        )
    out.with_name(out.name + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
