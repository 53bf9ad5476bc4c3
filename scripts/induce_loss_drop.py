"""Do the induction mode's token loadings follow the tokens that formation improves?

    .venv/bin/python scripts/induce_loss_drop.py \\
        --chi docs/results/induction_patterning/natural_wide/published/chi_and_probe_weights.nc \\
        --run-dir .patterning/runs/induce_wide-275cbf1030b6ad5c --preset induce_wide \\
        --scores docs/results/induction_patterning/natural_wide/mode_scan.json \\
        --after 5000 6000 7000 10000 \\
        --out docs/results/induction_patterning/natural_wide/loss_drop

A continuous induction indicator beside the binary "predictable" one: each probe unit's
loss drop d_z = ℓ_z(t) − ℓ_z(t') from the published χ's checkpoint t to each later step t'
(after formation), with the reference's checkpoints on the same probes (rebuilt from the
data spec: ``probe_seqs`` validation sequences; checked against the published predictable
flags). For the leading modes of the published χ (``mode_search.mode_table``, oriented so
their head loadings follow the circuit scores of ``--scores``): Pearson r and Spearman ρ
with d_z, the partial ρ given ℓ_z(t) (``fin.partial_spearman``; the loss level, which PC1
follows), and r with ℓ_z(t).
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.data.lm_data import load_lm_tokens, workload_probes
from patterning_core.estimators.decomposition import decompose
from patterning_core.experiments.induction.mode_search import mode_table
from patterning_core.experiments.induction.unit_features import predictable_units
from patterning_core.experiments.spacing.fin import partial_spearman
from patterning_core.model.checkpoints import checkpoint_path, load_checkpoint
from patterning_core.model.transformer import loss_per_token, preset
from patterning_core.recipes import induce_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chi", required=True, help="published chi_and_probe_weights.nc")
    parser.add_argument("--run-dir", required=True, help="the reference's training run")
    parser.add_argument("--preset", default="induce_wide")
    parser.add_argument("--scores", required=True, help="mode_scan.json with head_scores")
    parser.add_argument("--after", type=int, nargs="+", required=True, help="later steps")
    parser.add_argument("--probe-seqs", type=int, default=32)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    published = xr.open_dataset(args.chi)
    step = int(published.attrs["checkpoint"])
    config = preset(args.preset)
    tokens = load_lm_tokens(induce_data(), config)
    probes = workload_probes(tokens.val, {"probe_seqs": args.probe_seqs})
    predictable = predictable_units(probes).ravel()
    if not np.array_equal(predictable, published["predictable"].values):
        raise SystemExit("the rebuilt probes are not the published ones: check --probe-seqs.")
    losses = {}
    with torch.no_grad():
        for s in [step, *args.after]:
            params = load_checkpoint(checkpoint_path(args.run_dir, s)).params
            losses[s] = loss_per_token(params, probes, config).ravel().double().numpy()
    scores = json.loads(Path(args.scores).read_text())["head_scores"]
    modes = decompose(published["chi"].transpose("component", "unit"), "component", args.modes)
    base = losses[step]
    rows = []
    for row in mode_table(modes, scores, predictable, args.modes):
        v = modes["unit_loading"].sel(mode=row["mode"]).values * row["sign"]
        entry = {**row, "r_loss_level": float(np.corrcoef(v, base)[0, 1]), "drops": {}}
        for s in args.after:
            drop = base - losses[s]
            entry["drops"][s] = {
                "r": float(np.corrcoef(v, drop)[0, 1]),
                "spearman": float(spearmanr(v, drop)[0]),
                "partial_spearman": partial_spearman(v, drop, base),
            }
        rows.append(entry)
    loss_means = {
        s: {"predictable": float(x[predictable].mean()), "other": float(x[~predictable].mean())}
        for s, x in losses.items()
    }
    drop_vs_predictable = {
        s: float(np.corrcoef(base - losses[s], predictable)[0, 1]) for s in args.after
    }
    lines = [
        f"# Token loadings at step {step} against the loss drop over formation",
        "",
        f"Written by `scripts/induce_loss_drop.py` from `{args.chi}` and the run "
        f"`{args.run_dir}`. Mean probe loss (predictable / other tokens): "
        + "; ".join(
            f"step {s}: {m['predictable']:.2f} / {m['other']:.2f}" for s, m in loss_means.items()
        )
        + ". Correlation of the drop with the predictable flag: "
        + ", ".join(f"to {s}: {r:.2f}" for s, r in drop_vs_predictable.items())
        + ".",
        "",
        "| mode | explained variance | head alignment | r (predictable) | r (loss level) | "
        + " | ".join(f"drop to {s}: r / ρ / partial ρ" for s in args.after)
        + " |",
        "|---|---:|---:|---:|---:|" + "---|" * len(args.after),
    ]
    for e in rows:
        drops = " | ".join(
            f"{d['r']:+.3f} / {d['spearman']:+.3f} / {d['partial_spearman']:+.3f}"
            for d in e["drops"].values()
        )
        lines.append(
            f"| {e['mode']} | {e['explained_variance']:.5f} | {e['head_alignment']:.2f} | "
            f"{e['token_correlation']:+.3f} | {e['r_loss_level']:+.3f} | {drops} |"
        )
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    summary = {
        "step": step,
        "after": args.after,
        "loss_means": loss_means,
        "drop_vs_predictable": drop_vs_predictable,
        "modes": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
