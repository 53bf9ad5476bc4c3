"""Weights from χ in the span control b cannot touch: class-neutral kind contrasts.

    .venv/bin/python scripts/induce_class_neutral_span.py \\
        --config docs/examples/induce_wide_circuit_cells.json --ratio 4.3275 \\
        --out .patterning/induce/class_neutral_span/induce.npy

The circuit target dμ (the config's ``circuit_scores``, ``cell_weights.circuit_target``) is
solved from the config's published χ (standardized per component; nβ from the file) in the
span of one feature per pattern class c: ``1[class = c] · (synthetic − s_c)``, with s_c the
share of synthetic-sequence units among the training units of class c, so every feature has
mean 0 over each class of the training set and the weights ``1 + α·dĥ`` (clipped at 0, α for
the decile ratio ``--ratio``) keep every class's mean weight (up to the clipping). A shuffle
within the pattern classes (control b) therefore keeps no class re-weighting of them. Prints
the held-out target cosine over five probe halves and the per-class coefficients; writes the
training units' weights ``[N, T − 1]`` (float32) to ``--out``; retrain them with
``induce_formation_levers.py --weights NAME=OUT --neutral NAME^1 --shuffle NAME^1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.parameters import InduceParameters
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.data.token_classes import PRIMARY_CLASSES, TokenKinds
from patterning_core.estimators.decomposition import standardize
from patterning_core.estimators.feature_extrapolation import (
    alpha_for_ratio,
    decile_ratio,
    feature_solution_evaluation,
    fit_feature_solution,
    sequence_halves,
)
from patterning_core.estimators.intervention import weights_from_intervention
from patterning_core.experiments.induction.cell_weights import circuit_target
from patterning_core.experiments.induction.natural_weights import predict_units
from tasks.training import model_preset


def kind_contrasts(codes: np.ndarray, synthetic: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """``[..., classes]`` features ``1[code = c]·(synthetic − shares[c])`` of units with class
    ``codes`` and kind ``synthetic`` (same shape)."""
    onehot = codes[..., None] == np.arange(len(shares))
    return onehot * (synthetic[..., None].astype(np.float64) - shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ratio", type=float, default=4.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    p = InduceParameters(**json.loads(Path(args.config).read_text()))
    tokens = load_lm_tokens(p.data, model_preset(p.preset))
    _, codes = predict_units([], tokens.train, TokenKinds.from_strings(tokens.token_strings))
    n = tokens.train.shape[0]
    train_syn = np.broadcast_to((np.arange(n) >= n - tokens.n_synthetic)[:, None], codes.shape)
    shares = np.array(
        [
            train_syn[codes == c].mean() if (codes == c).any() else 0.0
            for c in range(len(PRIMARY_CLASSES))
        ]
    )

    ds = xr.open_dataset(p.published_chi)
    chi = ds["chi"].transpose("component", "unit")
    z = standardize(chi, "component").values
    n_beta = float(ds.attrs["n_beta"])
    d_mu = circuit_target([str(c) for c in chi.component.values], p.circuit_scores)
    probe_codes = np.array([PRIMARY_CLASSES.index(str(c)) for c in ds["pattern_class"].values])
    x_probe = kind_contrasts(probe_codes, ds["synthetic"].values.astype(bool), shares)
    sequence = ds["sequence"].values
    cosines = [
        feature_solution_evaluation(z, x_probe, d_mu, n_beta, sequence_halves(sequence, s)[0])[
            "heldout_target_cosine"
        ]
        for s in range(5)
    ]
    print("held-out target cosine over 5 probe halves:", " ".join(f"{c:+.3f}" for c in cosines))
    model = fit_feature_solution(z, x_probe, d_mu, n_beta)
    scale = np.abs(model.coef).max()
    for name, c in zip(PRIMARY_CLASSES, model.coef, strict=True):
        print(f"  {name:12s} synthetic-minus-natural coefficient {c / scale:+.3f}")

    dh = model.predict(kind_contrasts(codes, train_syn, shares))
    alpha = alpha_for_ratio(dh, args.ratio)
    weights = weights_from_intervention(dh, alpha, "clip").astype(np.float32)
    print(f"decile ratio {decile_ratio(weights):.3f}; class means:")
    for c, name in enumerate(PRIMARY_CLASSES):
        m = codes == c
        print(
            f"  {name:12s} natural {weights[m & ~train_syn].mean():.3f} "
            f"synthetic {weights[m & train_syn].mean():.3f} all {weights[m].mean():.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, weights)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
