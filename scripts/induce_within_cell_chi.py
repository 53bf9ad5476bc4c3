"""Does χ order the tokens within a cell? The circuit target's per-token solution against
the bigram surprise of each probe token, within the natural predictable cell.

    .venv/bin/python scripts/induce_within_cell_chi.py \\
        --config docs/examples/induce_wide_circuit_cells.json \\
        --out docs/results/induction_patterning/within_cell_chi

The class-shuffle control (Induce's weights shuffled within each pattern class) keeps
every class-level design, and the tokens copying predicts are one pattern class
(``induction``). So a χ design passes that control only if χ orders the tokens within that
class in a way that matters for formation. This script asks the first half of that from
the published χ (``published_chi`` of the config), without training anything:

- dh, the per-token minimum-norm solution of nβ·χ̃·dh = dμ (χ̃: χ standardized per
  component; dμ: the circuit target of the config's ``circuit_scores``), and its Spearman
  correlation with the bigram surprise −log p̂(token | previous token) (p̂ counted over the
  training corpus' natural sequences) over the natural predictable probe units, with a 95 %
  interval from resampling the probe sequences;
- the patterning equation solved in the span of the four cells plus one column, the
  surprise within the natural predictable cell (standardized): its coefficient's sign over
  20 random halves of the probe sequences, and the held-out target cosine of each half.

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

from flows.parameters import InduceParameters
from patterning_core.data.context_features import context_features
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.decomposition import standardize
from patterning_core.estimators.feature_extrapolation import (
    feature_solution_evaluation,
    fit_feature_solution,
    sequence_halves,
)
from patterning_core.estimators.intervention import solve_intervention
from patterning_core.experiments.induction.cell_weights import cell_indicators, circuit_target
from patterning_core.experiments.induction.token_groups import BigramCounts
from tasks.training import model_preset


def probe_grid(ds: xr.Dataset) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The probe sequences ``int64 [B, T]`` rebuilt from the units' token ids (position 0,
    which no unit predicts, holds −1: it matches no token), and each unit's row and
    column in it."""
    seq, pos, ids = (np.asarray(ds[c].values) for c in ("sequence", "position", "token_id"))
    grid = np.full((seq.max() + 1, pos.max() + 1), -1, dtype=np.int64)
    grid[seq, pos] = ids
    return torch.from_numpy(grid), seq, pos


def within_features(ds: xr.Dataset, counts: BigramCounts) -> dict[str, np.ndarray]:
    """``{name: [unit]}``: the bigram surprise (:func:`probe_surprise`), the in-context
    features of the unit's token (counts and distance as log(1 + x)) and its position."""
    grid, seq, pos = probe_grid(ds)
    found = context_features(grid).as_dict()
    out = {"bigram_surprise": probe_surprise(ds, counts)}
    for name in ("prev_distance", "prev_count", "bigram_count", "induction_share", "token_count"):
        v = found[name][seq, pos].double().numpy()
        out[name] = v if name == "induction_share" else np.log1p(v)
    out["position"] = pos.astype(np.float64)
    return out


def probe_surprise(ds: xr.Dataset, counts: BigramCounts) -> np.ndarray:
    """``[unit]`` surprise of each probe unit's token after the token before it (NaN at a
    sequence's first unit, whose previous token is not among the units)."""
    seq, pos, ids = (np.asarray(ds[c].values) for c in ("sequence", "position", "token_id"))
    index = {(int(s), int(p)): i for i, (s, p) in enumerate(zip(seq, pos, strict=True))}
    previous = np.array(
        [index.get((int(s), int(p) - 1), -1) for s, p in zip(seq, pos, strict=True)]
    )
    out = np.full(len(ids), np.nan)
    has = previous >= 0
    out[has] = counts.surprise(ids[previous[has]], ids[has])
    return out


def within_cell_reading(
    dh: np.ndarray,
    value: np.ndarray,
    cell: np.ndarray,
    sequence: np.ndarray,
    cells: np.ndarray,
    chi_std: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    masks: list[np.ndarray],
    resamples: int,
) -> dict:
    """One feature's row: Spearman ρ of dh with it over ``cell`` (with a sequence-resampled
    95 % interval), and the cells + feature solve over the halves ``masks``."""
    rho = float(spearmanr(dh[cell], value[cell]).statistic)
    rng = np.random.default_rng(0)
    seqs = np.unique(sequence[cell])
    members = {s: np.flatnonzero(cell & (sequence == s)) for s in seqs}
    boot = []
    for _ in range(resamples):
        rows = np.concatenate([members[s] for s in rng.choice(seqs, len(seqs))])
        boot.append(spearmanr(dh[rows], value[rows]).statistic)
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    within = np.zeros(len(dh))
    within[cell] = (value[cell] - value[cell].mean()) / value[cell].std()
    features = np.column_stack([cells, within])
    full = fit_feature_solution(chi_std, features, d_mu, n_beta)
    coefs, cosines = [], []
    for fit_mask in masks:
        held = feature_solution_evaluation(chi_std, features, d_mu, n_beta, fit_mask)
        coefs.append(float(held["fit"].coef[-1]))
        cosines.append(held["heldout_target_cosine"])
    return {
        "spearman": rho,
        "spearman_interval_95": [float(low), float(high)],
        "coef_all_units": float(full.coef[-1]),
        "coef_positive_halves": int(sum(c > 0 for c in coefs)),
        "heldout_target_cosine_mean": float(np.mean(cosines)),
        "heldout_target_cosine_std": float(np.std(cosines)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an induce config with published_chi")
    parser.add_argument("--halves", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    ds = xr.open_dataset(p.published_chi)
    chi = ds["chi"]
    n_beta = float(ds.attrs["n_beta"])
    components = [str(c) for c in chi.component.values]
    d_mu = circuit_target(components, p.circuit_scores)
    z = standardize(chi, "component")
    dh = solve_intervention(z, d_mu, n_beta).values

    tokens = load_lm_tokens(p.data, model_preset(p.preset))
    natural_rows = tokens.train[: tokens.train.shape[0] - tokens.n_synthetic]
    counts = BigramCounts.from_tokens(natural_rows, base=int(tokens.train.max()) + 1)
    features_of = within_features(ds, counts)

    synthetic = np.asarray(ds["synthetic"].values, dtype=bool)
    predictable = np.asarray(ds["predictable"].values, dtype=bool)
    cell = ~synthetic & predictable & ~np.isnan(features_of["bigram_surprise"])
    sequence = np.asarray(ds["sequence"].values)
    cells = cell_indicators(synthetic, predictable)
    masks = [sequence_halves(sequence, seed)[0] for seed in range(args.halves)]
    rows = {}
    for name, value in features_of.items():
        rows[name] = within_cell_reading(
            dh, value, cell, sequence, cells, z.values, d_mu, n_beta, masks, args.resamples
        )
    result = {
        "config": args.config,
        "published_chi": p.published_chi,
        "natural_predictable_units": int(cell.sum()),
        "features": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Does χ order the tokens within the natural predictable cell?",
        "",
        f"χ: `{p.published_chi}` (nβ {n_beta:g}); target: the circuit (`{args.config}`); "
        f"{int(cell.sum())} natural predictable probe units (a sequence's first unit, whose "
        "previous token no unit holds, left out). ρ: Spearman correlation of the per-token "
        "solution dh of nβ·χ̃·dh = dμ with the feature over these units (95 % interval from "
        f"{args.resamples} resamplings of the probe sequences). Cells + feature: the equation "
        "solved in the span of the four cells and the feature within this cell "
        f"(standardized); its coefficient's sign over {args.halves} random halves of the "
        "probe sequences and each half's held-out target cosine.",
        "",
        "| feature | ρ(dh, feature) | 95 % interval | coefficient > 0, halves | "
        "held-out target cosine |",
        "|---|---:|---|---:|---:|",
    ]
    for name, r in rows.items():
        low, high = r["spearman_interval_95"]
        lines.append(
            f"| {name} | {r['spearman']:+.3f} | {low:+.3f} to {high:+.3f} | "
            f"{r['coef_positive_halves']} of {args.halves} | "
            f"{r['heldout_target_cosine_mean']:+.3f} ± {r['heldout_target_cosine_std']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
