"""The loop of the circuit-cells design: ⟨φ_C⟩ measured again on its retrained models.

    .venv/bin/python scripts/induce_circuit_cells_loop.py --train-seed 0 --ratio 8 \\
        --step 4000 --conditions baseline induce --out DIR/loop_seed0

For each condition of ``scripts/induce_circuit_cells.py`` (same χ, scores, training
settings, ratio and seed; its runs must exist), every component's localized loss ⟨φ_C⟩ is
sampled at checkpoint ``--step`` of that condition's run with the design's loop sampler (the
χ config's ``loop_sampler`` over its ``sampler``; restricted runs, one per component) on the
χ workload's SGLD data and probes. ``--conditions`` samples only those (one process each can
run side by side; results are cached per run, step and sampler under ``--cache``); a call
without any reads every cached one and compares each condition's shift from the baseline
with the first-order prediction nβ·χ·dh (``loop.predicted_shift``; dh = ρ_z/ρ̄ − 1 over the
probe units, ρ by the design's rule) and along Induce's prediction and the target dμ.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from induce_circuit_cells import CONDITIONS, cell_design

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.susceptibility import sample_susceptibility_stats
from patterning_core.experiments.induction.loop import (
    along_direction,
    compare_shift,
    localized_loss,
    predicted_shift,
)
from patterning_core.model.checkpoints import file_sha256, list_checkpoints
from patterning_core.sampling import SamplerConfig
from patterning_core.store.workloads import build_workload
from patterning_core.workspace import settings_digest
from tasks.retraining import UNIFORM, save_weights, weighted_run_dir
from tasks.training import model_preset

PUBLISHED = "docs/results/induction_patterning/natural_wide_from4000"
SCORES = "docs/results/induction_patterning/natural_wide_embed_mode_from_checkpoint/results.json"
TRAIN_CONFIG = "docs/examples/induce_wide_embed_mode_restricted.json"
CHI_CONFIG = "docs/examples/induce_wide_from4000.json"


def cache_path(cache: Path, run_dir: Path, step: int, workload: dict, sampler: dict) -> Path:
    """Where :func:`sample_phi` keeps one run's ⟨φ⟩ (keyed by the checkpoint's digest)."""
    path = dict(list_checkpoints(run_dir))[step]
    key = settings_digest({"checkpoint": file_sha256(path), "sampler": sampler, "w": workload})
    return cache / f"{run_dir.name}-{step}-{key}.json"


def sample_phi(run_dir: Path, step: int, workload: dict, sampler: dict, cache: Path) -> dict:
    """``{"mean", "se", "components"}`` of ⟨φ_C⟩ at ``step`` of ``run_dir`` (cached by the
    checkpoint's digest and the sampler)."""
    path = dict(list_checkpoints(run_dir))[step]
    out = cache_path(cache, run_dir, step, workload, sampler)
    if out.exists():
        return json.loads(out.read_text())
    work = build_workload(workload, path)
    stats = sample_susceptibility_stats(
        work.loss_fn,
        work.params,
        work.data,
        work.probes,
        work.components,
        SamplerConfig.from_dict(sampler),
        component_names=list(work.components),
        include_full=False,
        chain_ids=list(range(int(sampler["num_chains"]))),
        progress=True,
    )
    mean, se = localized_loss(stats)
    record = {
        "run_dir": str(run_dir),
        "step": step,
        "components": [str(c) for c in stats.component.values],
        "mean": mean.tolist(),
        "se": se.tolist(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=4000)
    parser.add_argument("--conditions", nargs="*", default=[])
    parser.add_argument("--runs", default=".patterning/runs")
    parser.add_argument("--weights-dir", default=".patterning/induce/circuit_cells")
    parser.add_argument("--cache", default=".patterning/induce/circuit_cells/loop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chains", type=int, default=None, help="default: the loop sampler's")
    parser.add_argument("--draws", type=int, default=None, help="default: the loop sampler's")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = xr.open_dataset(Path(PUBLISHED) / "published" / "chi_and_probe_weights.nc")
    scores = json.loads(Path(SCORES).read_text())["reference"]["later_scores"]
    p = InduceParameters(**json.loads(Path(TRAIN_CONFIG).read_text()))
    chi_p = InduceParameters(**json.loads(Path(CHI_CONFIG).read_text()))
    sampler = {**chi_p.sampler, **(chi_p.loop_sampler or {})}
    if args.chains is not None:
        sampler["num_chains"] = args.chains
    if args.draws is not None:
        sampler["num_draws"] = args.draws
    workload = chi_p.chi_workload()
    train = {**p.train, "seed": args.train_seed}
    tokens = load_lm_tokens(p.data, model_preset(p.preset))
    design = cell_design(ds, scores, tokens, args.ratio, args.seed)

    def run_dir_of(name: str) -> Path:
        rho = design.weights[name]
        digest = UNIFORM if rho is None else save_weights(rho, args.weights_dir)[1]
        return weighted_run_dir(args.runs, p.preset, p.data, train, digest)

    cache = Path(args.cache)
    for name in args.conditions:
        print(f"sampling ⟨φ⟩ of {name} at {args.step}", flush=True)
        sample_phi(run_dir_of(name), args.step, workload, sampler, cache)
    if args.conditions:
        return

    measured = {}
    for name in CONDITIONS:
        run_dir = run_dir_of(name)
        hit = cache_path(cache, run_dir, args.step, workload, sampler)
        if hit.exists():
            measured[name] = json.loads(hit.read_text())
    if "baseline" not in measured:
        raise SystemExit("the baseline's ⟨φ⟩ is not sampled yet: --conditions baseline")
    components = measured["baseline"]["components"]
    chi = design.chi.sel(component=components).values
    base, base_se = (np.array(measured["baseline"][k]) for k in ("mean", "se"))
    induce_pred = predicted_shift(chi, design.probe["induce"], design.n_beta)
    target = np.array([design.d_mu[list(design.chi.component.values).index(c)] for c in components])
    rows = []
    for name, m in measured.items():
        if name == "baseline":
            continue
        shift = np.array(m["mean"]) - base
        se = np.sqrt(np.array(m["se"]) ** 2 + base_se**2)
        row = {"condition": name, "shift": shift.tolist(), "se": se.tolist()}
        row["along_induce_prediction"] = along_direction(shift, se, induce_pred)
        row["along_target"] = along_direction(shift, se, target)
        if name in design.probe:
            pred = predicted_shift(chi, design.probe[name], design.n_beta)
            row["predicted"] = pred.tolist()
            row["predicted_along_induce_prediction"] = float(
                pred @ induce_pred / np.linalg.norm(induce_pred)
            )
            row["predicted_along_target"] = float(pred @ target / np.linalg.norm(target))
            row["comparison"] = compare_shift(shift, pred, components)
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "train_seed": args.train_seed,
        "ratio": args.ratio,
        "step": args.step,
        "sampler": sampler,
        "components": components,
        "baseline": measured["baseline"],
        "rows": rows,
        "command": " ".join(sys.argv),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Loop of the circuit-cells design: ⟨φ_C⟩ at step {args.step}, training seed "
        f"{args.train_seed}, ratio {args.ratio:g}",
        "",
        f"Sampler: {sampler['num_chains']} chains × {sampler['num_draws']} draws. Shift: the "
        "condition's ⟨φ_C⟩ minus the baseline's; predicted: nβ·χ·dh at the χ checkpoint. "
        "Along a direction: projection on its unit vector (± SE).",
        "",
        "| condition | along target dμ: measured | predicted | along Induce's prediction: "
        "measured | predicted | cosine with prediction | head signs agree |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, ase = r["along_target"]
        b, bse = r["along_induce_prediction"]
        c = r.get("comparison", {})
        lines.append(
            f"| {r['condition']} | {a:+.4f} ± {ase:.4f} | "
            f"{r.get('predicted_along_target', float('nan')):+.5f} | {b:+.4f} ± {bse:.4f} | "
            f"{r.get('predicted_along_induce_prediction', float('nan')):+.5f} | "
            f"{c.get('cosine', float('nan')):+.2f} | "
            f"{c.get('head_signs_agree', '—')}/{c.get('heads', '—')} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
