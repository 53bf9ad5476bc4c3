"""More random-mode controls for an ``induce`` design: is Induce's effect outside what a
random direction of the same mode space does at the same dose?

    .venv/bin/python scripts/induce_random_controls.py \\
        --config docs/examples/induce_wide_embed_mode_from_checkpoint.json \\
        --seeds 1 2 --out docs/results/induction_patterning/from_checkpoint_random_controls

The flow retrains one random-mode control per seed (``controls.random_mode_target`` with
the extrapolation seed 0). This script recomputes the design's weights from its χ store
(``natural_weights`` with the flow's settings) with extrapolation seeds ``--seeds`` and
retrains each seed's ``control_random`` weights exactly as the flow would (same
initialization and data order, the config's ``weights_from_step`` — from the uniform
prefix run, trained once — runs memoized in the flow's run folders; ``--steps`` stops
them early), then reports every run's best layer-1 prefix matching k steps after
the weights start, beside the flow's own runs of the design found in the same folders. A
seed also changes the split of the probes for the extrapolator's cross-validated rcond, as
it would in the flow. Writes ``<out>.md`` and ``<out>.json``.

A design whose config reads ``published_chi`` (with its ``circuit_scores``) is rebuilt from
that file (its sha256 checked), as the flow builds it.

Replication on another training seed, from what the design published (no χ store, no
reference run needed): ``--published DIR`` reads χ at the weights step from
``DIR/published/chi_and_probe_weights.nc`` and the heads' later circuit scores from
``DIR/results.json``; ``--train-seed S`` trains, from seed S's own uniform prefix at
``weights_from_step``, its baseline (uniform), Induce, Repress and the shuffled control
(extrapolation seed 0, the flow's) and one random direction per ``--seeds`` — the weights
stay those of the design's χ (seed 0's reference), only the training seed changes.
``--cell-shuffles K`` adds K permutations of the Induce weights within pattern class ×
sequence kind cells (``controls.cell_codes``; shuffle seeds 0…K−1). ``--ratio R`` gives
every weighted run the dose R instead of the config's (with ``--published`` the design's own
ratio is checked against the published weights first)::

    .venv/bin/python scripts/induce_random_controls.py \\
        --config docs/examples/induce_wide_embed_mode_from_checkpoint.json \\
        --published docs/results/induction_patterning/natural_wide_embed_mode_from_checkpoint \\
        --train-seed 1 --seeds 0 1 2 --steps 6000 --out /tmp/seed1
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import LMTokens, load_lm_tokens
from patterning_core.data.token_classes import TokenKinds
from patterning_core.experiments.induction.controls import cell_codes, shuffle_within_classes
from patterning_core.experiments.induction.metrics import induction_curve
from patterning_core.experiments.induction.natural_report import AFTER_WEIGHTS_OFFSETS, best_after
from patterning_core.experiments.induction.natural_weights import natural_weights, predict_units
from patterning_core.experiments.induction.patterning import circuit_scores_from
from patterning_core.experiments.spacing.fin_store import probe_tokens
from patterning_core.model.training import copy_run_prefix
from patterning_core.store.chi_store import chi_at
from tasks.induce import read_published_chi
from tasks.retraining import (
    UNIFORM,
    train_uniform_prefix,
    train_with_weights,
    weighted_run_dir,
)
from tasks.training import check_training_inputs, model_preset, train_in_run_dir

PUBLISHED_CHI = Path("published") / "chi_and_probe_weights.nc"


def design_chi(p: InduceParameters, config, args) -> tuple[xr.DataArray, float, dict, object, list]:
    """``(χ [component, unit] at the weights step, nβ, head scores, probes, strings)``: from
    the design's χ store and its seed's reference run, or (``--published``) from the χ and
    the heads' later circuit scores the design published."""
    if args.published is None and p.published_chi is not None:  # the χ the design read
        source = {"path": p.published_chi, "sha256": p.published_chi_sha256}
        chi, n_beta = read_published_chi(
            {**source, "workload": p.chi_workload()}, p.weights_step, p.chi_estimator
        )
        probes, strings = probe_tokens(p.chi_workload(), config)
        if p.circuit_scores is None:
            raise SystemExit(
                "a design that reads published_chi needs circuit_scores in its config here "
                "(or --published DIR, whose results.json holds the reference's scores)."
            )
        return chi, n_beta, p.circuit_scores, probes, strings
    if args.published is None:
        seed = p.seeds[0]
        reference = weighted_run_dir(
            args.runs, p.preset, p.data, {**p.train, "seed": seed}, UNIFORM
        )
        curve = induction_curve(reference, config)
        scores = p.circuit_scores or circuit_scores_from(curve.scores[-1], curve.previous_token[-1])
        chi, n_beta, ds = chi_at(Path(p.out_dir) / "chi.zarr", p.weights_step, p.chi_estimator)
        probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
        return chi, n_beta, scores, probes, strings
    folder = Path(args.published)
    ds = xr.open_dataset(folder / PUBLISHED_CHI).load()
    if int(ds.attrs["checkpoint"]) != p.weights_step:
        raise SystemExit(
            f"{folder / PUBLISHED_CHI} holds χ at step {ds.attrs['checkpoint']}, the config's "
            f"weights_step is {p.weights_step}: give the design's own config."
        )
    scores = (
        p.circuit_scores
        or json.loads((folder / "results.json").read_text())["reference"]["later_scores"]
    )
    probes, strings = probe_tokens(p.chi_workload(), config)
    return ds["chi"], float(ds.attrs["n_beta"]), scores, probes, strings


@dataclass
class Design:
    """A design's flow parameters, training tokens and χ at its weights step (from its
    store or what it published: ``design_chi``); ``weights`` rebuilds its weights."""

    p: InduceParameters
    config: object  # TransformerConfig
    tokens: LMTokens
    chi: xr.DataArray
    n_beta: float
    scores: dict
    probes: object
    strings: list
    _computed: dict = field(default_factory=dict, repr=False)

    def weights(self, extrapolation_seed: int = 0, ratio: float | None = None):
        """``natural_weights`` with the design's settings (``ratio`` None: the design's),
        computed once per (seed, ratio)."""
        p = self.p
        key = (extrapolation_seed, p.ratio if ratio is None else ratio)
        if key not in self._computed:
            self._computed[key] = self._solve(*key)
        return self._computed[key]

    def _solve(self, extrapolation_seed: int, ratio: float):
        p = self.p
        return natural_weights(
            self.chi, self.n_beta, self.scores, self.probes, self.tokens.train, self.strings,
            ratio=ratio, n_leading=p.n_leading,
            seed=extrapolation_seed, extrapolator=p.extrapolator, target_mode=p.target_mode,
            balance=p.balance_positions, n_synthetic=self.tokens.n_synthetic,
            target=p.target, class_neutral=p.class_neutral,
        )  # fmt: skip


def load_published(config_path: str, published: str) -> Design:
    """The design of flow config ``config_path`` from what it published in ``published``;
    refused unless its probe weights rebuild to the published ones."""
    p = InduceParameters(**json.loads(Path(config_path).read_text()))
    config = model_preset(p.preset)
    tokens = load_lm_tokens(p.data, config)
    found = design_chi(p, config, argparse.Namespace(published=published, runs=None))
    design = Design(p, config, tokens, *found)
    check_reproduces_published(design.weights(0), Path(published))
    return design


def check_reproduces_published(result, published: Path) -> None:
    """The recomputed probe weights ρ must be the published ones (same χ, same code)."""
    ds = xr.open_dataset(published / PUBLISHED_CHI)
    for condition in ("induce", "repress", "control_random"):
        found, want = result.probe[f"rho_{condition}"], ds[f"rho_{condition}"].values
        gap = float(np.max(np.abs(found - want)))
        if gap > 1e-6:
            raise SystemExit(
                f"recomputed probe weights of {condition} differ from the published ones by "
                f"{gap:.2e}: the weights code changed since the design was published."
            )
        print(f"{condition}: probe weights reproduce the published ones (max gap {gap:.1e})")


def train_uniform(p: InduceParameters, settings: dict, start: int, args, tokens: LMTokens) -> Path:
    """The uniform run with ``settings``, its first ``start`` steps from the uniform prefix
    run the weighted runs start from (the same run, trained once)."""
    run_dir = weighted_run_dir(args.runs, p.preset, p.data, settings, UNIFORM)
    with_start = {**settings, "weights_from_step": start}
    prefix_dir = train_uniform_prefix(p.preset, p.data, with_start, args.runs, tokens)
    if prefix_dir is not None:
        copy_run_prefix(run_dir, prefix_dir, up_to_step=start)
    tc = check_training_inputs(p.preset, p.data, settings)
    train_in_run_dir(model_preset(p.preset), tokens, tc, run_dir, title="training loss baseline")
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an induce flow config (JSON)")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[], help="extrapolation seeds of random directions"
    )
    parser.add_argument("--runs", default=".patterning/runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train the controls to this step only (default: the config's; e.g. "
        "weights_from_step + 1000 for the +1000 column). The flow's runs are read as they are.",
    )
    parser.add_argument(
        "--published",
        default=None,
        help="the design's report folder: χ and head scores from what it published",
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="train baseline, Induce, Repress, the shuffled control and the random "
        "directions with this training seed (default: read the flow's runs of its first seed)",
    )
    parser.add_argument(
        "--cell-shuffles",
        type=int,
        default=0,
        help="with --train-seed: this many permutations of the Induce weights within pattern "
        "class × sequence kind cells",
    )
    parser.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="the dose (top/bottom-decile weight ratio) of every weighted run (default: the "
        "config's); with --published the design's own ratio is still checked first",
    )
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    if args.cell_shuffles and args.train_seed is None:
        parser.error("--cell-shuffles needs --train-seed (the design's weights are rebuilt there)")

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    config = model_preset(p.preset)
    tokens = load_lm_tokens(p.data, config)
    seed = p.seeds[0] if args.train_seed is None else args.train_seed
    start = p.weights_from_step
    weighted = {**p.train, "seed": seed, **({"weights_from_step": start} if start else {})}
    controls = {**weighted, **({"steps": args.steps} if args.steps else {})}
    torch.set_num_threads(args.threads)
    found = Design(p, config, tokens, *design_chi(p, config, args))
    ratio = p.ratio if args.ratio is None else args.ratio

    def row(name: str, run_dir: Path) -> dict:
        c = induction_curve(run_dir, config)
        return {
            "name": name,
            "run_dir": str(run_dir),
            "formation_step": c.formation_step,
            "final_best_pms": float(c.best[-1]),
            "best_pms_after_weights": best_after(c.steps, c.best, start, AFTER_WEIGHTS_OFFSETS),
        }

    def train(weights: np.ndarray, label: str) -> Path:
        return train_with_weights(
            p.preset,
            p.data,
            controls,
            weights,
            Path(p.out_dir) / "weights",
            args.runs,
            tokens,
            label,
        )

    if args.train_seed is None:  # the flow's own runs of its first seed, where they exist
        reference = weighted_run_dir(
            args.runs, p.preset, p.data, {**p.train, "seed": seed}, UNIFORM
        )
        rows = [row("baseline", reference)]
        flow_files = json.loads((Path(p.out_dir) / "weights.json").read_text())["files"]
        for condition, info in flow_files.items():
            run_dir = weighted_run_dir(args.runs, p.preset, p.data, weighted, info["digest"])
            if run_dir.is_dir():
                rows.append(row(f"{condition} (flow)", run_dir))
    else:  # train the design's conditions on this seed: weights of extrapolation seed 0
        if args.published is not None:
            check_reproduces_published(found.weights(0), Path(args.published))
        design = found.weights(0, ratio)
        baseline = {**p.train, "seed": seed, **({"steps": args.steps} if args.steps else {})}
        rows = [row("baseline", train_uniform(p, baseline, start, args, tokens))]
        for condition in ("induce", "repress", "control_shuffled"):
            rows.append(
                row(condition, train(design.weights[condition], f"{condition} seed {seed}"))
            )
            print(f"{condition}: {rows[-1]['best_pms_after_weights']}", flush=True)
        if args.cell_shuffles:
            kinds = TokenKinds.from_strings(tokens.token_strings)
            _, class_codes = predict_units([], tokens.train, kinds)
            cells = cell_codes(class_codes, tokens.n_synthetic)
            for k in range(args.cell_shuffles):
                shuffled = shuffle_within_classes(design.weights["induce"], cells, seed=k)
                name = f"induce shuffled within cells, seed {k}"
                rows.append(row(name, train(shuffled, f"{name}, training seed {seed}")))
                print(f"{name}: {rows[-1]['best_pms_after_weights']}", flush=True)
    for s in args.seeds:
        result = found.weights(s, ratio)
        weights = result.weights["control_random"]
        print(
            f"control_random seed {s}: ratio "
            f"{result.summary['dose']['ratio']['control_random']:.2f}",
            flush=True,
        )
        run_dir = train(weights, f"control_random extrapolation seed {s}")
        control = result.summary["extrapolation"]["control_random"]
        rows.append(
            {
                **row(f"control_random, extrapolation seed {s}", run_dir),
                "heldout_target_cosine": control.get("heldout_target_cosine"),
            }
        )
        print(f"{rows[-1]['name']}: {rows[-1]['best_pms_after_weights']}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "config": args.config,
                "train_seed": seed,
                "published": args.published,
                "steps": args.steps,
                "ratio": ratio,
                "rows": rows,
            },
            indent=1,
        )
    )
    keys = [f"+{o}" for o in AFTER_WEIGHTS_OFFSETS]
    lines = [
        "# Random-mode controls against Induce, re-weighted from a checkpoint",
        "",
        f"Config `{args.config}`, seed {seed}; weight ratio {ratio:g}; weights from step {start}; "
        "best layer-1 prefix "
        "matching k steps after it (+k), formation step and the last step's value.",
        "",
        "| run | formation step | " + " | ".join(keys) + " | last step |",
        "|---|---:|" + "---:|" * len(keys) + "---:|",
    ]
    for r in rows:
        after = r["best_pms_after_weights"]
        cells = " | ".join("—" if after[k] is None else f"{after[k]:.3f}" for k in keys)
        form = "none" if r["formation_step"] is None else r["formation_step"]
        lines.append(f"| {r['name']} | {form} | {cells} | {r['final_best_pms']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
