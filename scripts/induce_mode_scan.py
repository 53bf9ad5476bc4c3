"""Where is the induction mode? The mode search of the ``induce`` flow at every checkpoint of
one or more χ stores, with how much of χ beyond PC1 is signal.

    .venv/bin/python scripts/induce_mode_scan.py \\
        --store default=.patterning/induce/natural/chi.zarr \\
        --store long=.patterning/induce/natural_v2/chi.zarr \\
        --run-dir .patterning/runs/demo-1b0c85bc6a6d05a5 \\
        --out docs/results/induction_patterning/natural/mode_scan

For every store and every checkpoint whose shards are all written (partial ones are
skipped): the φ traces' integrated autocorrelation time, the reliability of χ beyond PC1
between the two halves of the chains (``estimators.convergence.structure_reproducibility``),
the leading modes' head alignment and token correlation (``mode_search.mode_table``; head
scores: the reference's circuit scores at its last checkpoint) and how well the two halves
agree on the best candidate, the token ceiling (``mode_search.token_ceiling``: no mode's
token correlation can beat it on held-out probes), the layer-1 circuit axis
(:func:`layer_axis`) and the modes of χ inside the span of the extrapolator's features, against
a permutation null (``mode_search.feature_span_modes``), and how well weights built from the
features (and from the reference model's own features at that step) can aim at PC2 and at the
best candidate as the probe sequences grow (``feature_extrapolation.span_reach_by_sequences``).
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.data.context_features import context_features
from patterning_core.estimators.convergence import structure_reproducibility
from patterning_core.estimators.decomposition import decompose, mode_alignment, standardize
from patterning_core.estimators.feature_extrapolation import (
    sequence_halves,
    span_reach_by_sequences,
)
from patterning_core.estimators.susceptibility import chi_from_stats
from patterning_core.experiments.induction.mode_search import (
    feature_span_modes,
    find_induction_mode,
    mode_agreement,
    point_biserial,
    token_ceiling,
)
from patterning_core.experiments.induction.patterning import circuit_scores
from patterning_core.experiments.induction.unit_features import (
    predictable_units,
    reference_features,
    unit_features,
)
from patterning_core.model.checkpoints import list_checkpoints, load_checkpoint
from patterning_core.report.markdown import markdown_table
from patterning_core.sampling.diagnostics import integrated_autocorrelation_time
from patterning_core.store.chi_store import StoreError, open_chi, read_stats
from tasks.induce import _probes


def layer_signal(
    chi: xr.DataArray, layer: str, head_scores: dict, predictable: np.ndarray
) -> float:
    """Across the heads of ``layer`` (``"L1"``): the correlation between each head's later
    score and how its standardized χ, minus the layer's mean head, correlates with the
    predictable tokens. Negative χ expresses a unit, so a circuit seen by χ gives a value
    near −1: the later induction heads' χ is lower on the tokens that copying predicts."""
    names = [c for c in map(str, chi.component.values) if c.startswith(layer)]
    z = standardize(chi.sel(component=names)).values
    r = point_biserial(z - z.mean(axis=0), predictable)
    return float(np.corrcoef(r, [head_scores[n] for n in names])[0, 1])


def layer_axis(
    chi: xr.DataArray,
    halves: list[xr.DataArray],
    layer: str,
    head_scores: dict,
    predictable: np.ndarray,
    features: np.ndarray,
    sequence: np.ndarray,
) -> dict:
    """The leading mode of ``layer``'s heads alone, χ standardized per unit (which removes
    the pattern all heads share, PC1 of the full χ): its head alignment with the later
    scores, how reliably the chain halves give its unit loadings (each half's standardized χ
    projected on the pooled mode's head loadings), its token correlation with the
    predictable tokens, and the held-out R² of its unit loadings from the extrapolator's
    unit features (pattern class and in-context features; least squares fitted on one of
    the extrapolator's halves of the probe sequences, read on the other, both ways round):
    what of its token side the features see."""
    names = [c for c in map(str, chi.component.values) if c.startswith(layer)]
    modes = decompose(chi.sel(component=names), "unit")
    u = modes["component_loading"].sel(mode=1).values
    v = modes["unit_loading"].sel(mode=1).values
    alignment = float(mode_alignment(modes.isel(mode=[0]), head_scores).values[0])
    u, v = (u, v) if alignment >= 0 else (-u, -v)
    projections = [u @ standardize(h.sel(component=names), "unit").values for h in halves]
    design = np.column_stack([np.ones(len(v)), features])
    first, held_out = sequence_halves(sequence)
    r2 = []
    for train in (first, held_out):
        coef = np.linalg.lstsq(design[train], v[train], rcond=None)[0]
        resid = v[~train] - design[~train] @ coef
        r2.append(float(1 - resid.var() / v[~train].var()))
    return {
        "head_alignment": abs(alignment),
        "explained_variance": float(modes["explained_variance"].values[0]),
        "half_reliability": float(np.corrcoef(*projections)[0, 1]),
        "token_correlation": float(point_biserial(v[None, :], predictable)[0]),
        "feature_r2_heldout": float(np.mean(r2)),
        "head_loadings": dict(zip(names, map(float, u), strict=True)),
    }


def span_reach(
    chi: xr.DataArray,
    modes: xr.Dataset,
    candidate: int,
    features: np.ndarray,
    sequence: np.ndarray,
    n_beta: float,
    rcond: float | None = 1e-6,
) -> dict:
    """How well weights built from the unit features can aim at PC2 and at the candidate
    mode, by the number of probe sequences they are solved and read on
    (``feature_extrapolation.span_reach_by_sequences``, k = 4, 8, 16, … up to half the
    sequences; 40 draws each; ``rcond`` the solution's truncation, None: chosen per draw by
    cross-validation, as the flow does): ``{"PC<k>": {k: median held-out target
    cosine}}``."""
    n_seqs = len(np.unique(sequence))
    sizes = [k for k in (4, 8, 16, 32, 64, 128) if 2 * k <= n_seqs] + [n_seqs // 2]
    z = standardize(chi).values
    return {
        f"PC{k}": span_reach_by_sequences(
            z,
            features,
            modes["component_loading"].sel(mode=k).values,
            n_beta,
            sequence,
            sorted(set(sizes)),
            rcond=rcond,
        )
        for k in sorted({2, candidate})
    }


def reach_text(reach: dict | None) -> str:
    """``{"PC2": {4: 0.09, …}, …}`` as ``PC2: 4 0.09, …; PC4: …`` (``—`` for None)."""
    if not reach:
        return "—"
    return "; ".join(
        f"{mode}: " + ", ".join(f"{k} {c:.2f}" for k, c in by_k.items())
        for mode, by_k in reach.items()
    )


def other_indicators(probes) -> dict[str, np.ndarray]:
    """Two readings of "induction predicts this token" besides the binary one, per unit:
    ``signed`` (+1 the bigram repeated, so copying is right; −1 the preceding token occurred
    earlier with another continuation, so copying is wrong; 0 no earlier occurrence) and
    ``share`` (the share of earlier occurrences that copying gets right)."""
    cf = context_features(probes)
    right = cf.bigram_repeated[:, 1:].numpy().ravel()
    seen = cf.prev_seen[:, 1:].numpy().ravel()
    signed = np.where(right, 1.0, np.where(seen, -1.0, 0.0))
    return {"signed": signed, "share": cf.induction_share[:, 1:].numpy().ravel()}


def scan_checkpoint(
    store: str,
    step: int,
    head_scores: dict,
    predictable: np.ndarray,
    sequence: np.ndarray,
    features: np.ndarray,
    others: dict[str, np.ndarray] | None = None,
    reference: np.ndarray | None = None,
    reach_rcond: float | None = 1e-6,
) -> dict:
    """The numbers of the module doc for one checkpoint of one store (``sequence``: each
    unit's probe sequence, the groups the token ceiling holds out; ``reference``: the
    reference model's own features of the probe units at this step, for the span reach
    with them)."""
    stats = read_stats(store, step)
    sampler = json.loads(stats.attrs["sampler_config"])
    chains = stats.chain.values
    half = len(chains) // 2
    halves = [
        chi_from_stats(stats.sel(chain=part)).transpose("component", "unit")
        for part in (chains[:half], chains[half:])
    ]
    chi = chi_from_stats(stats).transpose("component", "unit")
    n_beta = float(sampler["n_beta"])
    modes = decompose(chi)
    found = find_induction_mode(modes, head_scores, predictable)
    half_modes = [decompose(h) for h in halves]
    taus = [integrated_autocorrelation_time(t) for t in stats["loss_trace"].values]
    return {
        "step": int(step),
        "chains": len(chains),
        "draws": int(sampler["num_draws"]),
        "n_beta": float(sampler["n_beta"]),
        "localization": float(sampler["localization"]),
        "steps_between_draws": int(sampler["steps_between_draws"]),
        "autocorrelation_time": float(np.nanmedian(taus)),
        "half_reliability_beyond_pc1": structure_reproducibility(
            halves[0].values, halves[1].values
        )["median"],
        "layer1_signal": layer_signal(chi, "L1", head_scores, predictable),
        "token_ceiling": token_ceiling(chi, predictable, sequence),
        "layer1_axis": layer_axis(chi, halves, "L1", head_scores, predictable, features, sequence),
        "feature_span": feature_span_modes(chi, features, head_scores, predictable),
        "span_reach": span_reach(
            chi, modes, found["mode"], features, sequence, n_beta, reach_rcond
        ),
        "span_reach_with_reference": None
        if reference is None
        else span_reach(
            chi,
            modes,
            found["mode"],
            np.column_stack([features, reference]),
            sequence,
            n_beta,
            reach_rcond,
        ),
        "reach_truncation": "exact (rcond 1e-6)" if reach_rcond else "cross-validated",
        "other_indicators": {
            name: {"token_ceiling": token_ceiling(chi, x, sequence)["heldout_r"]}
            for name, x in (others or {}).items()
        },
        "best_mode": found["mode"],
        "found": found["found"],
        "best_mode_half_agreement": mode_agreement(
            half_modes[0], found["mode"], half_modes[1], found["mode"]
        ),
        "table": found["table"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", action="append", required=True, help="LABEL=PATH of a χ store")
    p.add_argument("--run-dir", required=True, help="the reference run (circuit scores)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    p.add_argument(
        "--reach-truncation",
        choices=("exact", "cv"),
        default="exact",
        help="span reach solved exactly (rcond 1e-6) or truncated at the rcond that "
        "cross-validation over the sequences solved on picks (as the induce flow does)",
    )
    args = p.parse_args(argv)

    checkpoints = dict(list_checkpoints(args.run_dir))
    last_step, last_path = max(checkpoints.items())
    ckpt = load_checkpoint(last_path)
    head_scores = circuit_scores(ckpt.params, ckpt.config)
    rows, numbers = [], {"head_scores": head_scores, "scores_step": last_step, "stores": {}}
    for item in args.store:
        label, _, path = item.partition("=")
        ds = open_chi(path)
        probes, strings = _probes(ds, args.preset)
        predictable = predictable_units(probes).ravel()
        features = unit_features(probes, strings).reshape(predictable.size, -1)
        others = other_indicators(probes)
        sequence = np.repeat(np.arange(probes.shape[0]), probes.shape[1] - 1)
        numbers["stores"][label] = {"path": path, "checkpoints": []}
        for step in map(int, ds.checkpoint.values):
            reference = None
            if step in checkpoints:
                at_step = load_checkpoint(checkpoints[step])
                reference = reference_features(at_step.params, at_step.config, probes)
                reference = reference.reshape(predictable.size, -1)
            try:
                scan = scan_checkpoint(
                    path,
                    step,
                    head_scores,
                    predictable,
                    sequence,
                    features,
                    others,
                    reference,
                    None if args.reach_truncation == "cv" else 1e-6,
                )
            except StoreError as err:
                print(f"{label} step {step}: skipped ({str(err).splitlines()[0][:80]}…)")
                continue
            numbers["stores"][label]["checkpoints"].append(scan)
            lead = scan["table"][1:5]
            rows.append(
                {
                    "store": label,
                    "step": step,
                    "nβ / γ": f"{scan['n_beta']:g} / {scan['localization']:g}",
                    "chains × draws (every k steps)": f"{scan['chains']} × {scan['draws']} "
                    f"({scan['steps_between_draws']})",
                    "τ (draws)": f"{scan['autocorrelation_time']:.1f}",
                    "reliability beyond PC1 (halves)": f"{scan['half_reliability_beyond_pc1']:.2f}",
                    "PC1": f"{scan['table'][0]['explained_variance']:.1%}",
                    "modes 2–5: head alignment / token r": "; ".join(
                        f"{r['head_alignment']:.2f}/{r['token_correlation']:+.2f}" for r in lead
                    ),
                    "L1 signal": f"{scan['layer1_signal']:+.2f}",
                    "token ceiling (held out)": f"{scan['token_ceiling']['heldout_r']:.2f}",
                    "ceiling, signed / share": " / ".join(
                        f"{v['token_ceiling']:.2f}" for v in scan["other_indicators"].values()
                    ),
                    "L1 axis: alignment / halves / token r / feature R²": "{:.2f} / {:.2f} / "
                    "{:+.2f} / {:.2f}".format(
                        *(
                            scan["layer1_axis"][k]
                            for k in (
                                "head_alignment",
                                "half_reliability",
                                "token_correlation",
                                "feature_r2_heldout",
                            )
                        )
                    ),
                    "feature span: best mode, alignment / token r (null p)": "PC{mode} "
                    "{head_alignment:.2f} / {token_correlation:+.2f} ({p:.3f})".format(
                        **scan["feature_span"]["best"], p=scan["feature_span"]["null"]["p_joint"]
                    ),
                    "span reach (target cosine at k sequences)": reach_text(scan["span_reach"]),
                    "span reach, + the reference's features": reach_text(
                        scan["span_reach_with_reference"]
                    ),
                    "best (halves agree)": f"{scan['best_mode']} "
                    f"({'found' if scan['found'] else 'not found'}, "
                    f"{scan['best_mode_half_agreement']:.2f})",
                }
            )
            print(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(numbers, indent=1))
    scores = ", ".join(f"{k} {v:.2f}" for k, v in head_scores.items())
    text = [
        "# The induction-mode search per checkpoint",
        "",
        "Written by `.venv/bin/python scripts/induce_mode_scan.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + f"`. Head scores (the reference at step "
        f"{last_step}; layer 0 previous-token, layer 1 prefix matching): {scores}.",
        "Thresholds: head alignment ≥ 0.8 and token correlation ≥ 0.3. *L1 signal*: across "
        "the layer-1 heads, the correlation of each head's later prefix matching with the "
        "point-biserial r between its χ (standardized, minus the layer's mean head) and the "
        "predictable tokens (−1: the later induction heads' χ is lowest, i.e. most "
        "expressing, on the tokens copying predicts). *Token ceiling*: the held-out "
        "correlation with the predictable tokens of the best combination of χ's rows "
        "(fitted on half of the probe sequences; `mode_search.token_ceiling`), which no "
        "mode can exceed; *signed / share*: the same for two other indicators (+1 copying "
        "right, −1 copying wrong, 0 no earlier occurrence; the share of earlier occurrences "
        "that copying gets right). *L1 axis*: the leading mode of the layer-1 heads alone, χ "
        "standardized per unit (removing the pattern all heads share): its head alignment "
        "with the later prefix matching, the chain halves' agreement on its unit loadings, "
        "their correlation with the predictable tokens, and the held-out R² of those "
        "loadings from the extrapolator's unit features (pattern class and in-context "
        "features). *Feature span*: the modes of χ's projection on the span of those unit "
        "features over the probe units, the part of χ that weights built from the features "
        "can act on (`mode_search.feature_span_modes`): the best candidate and the share of "
        "200 unit-permuted copies of χ in which some mode reaches both its alignment and its "
        "|r| (token correlations inside a span that holds the indicator's own feature are "
        "large by construction: the null says how large). *Span reach*: for PC2 and the best "
        "candidate, the median held-out target cosine of weights solved in the features' "
        "span on k probe sequences and read on k others "
        "(`feature_extrapolation.span_reach_by_sequences`): how it grows with k says how many "
        "probe sequences aiming at that mode needs; *+ the reference's features*: the same "
        "with the reference model's own loss and attention statistics at the store's step "
        "added to the features (`unit_features.reference_features`, an auxiliary model). "
        + (
            "The span solutions are truncated at the rcond that cross-validation over the k "
            "sequences solved on picks (`feature_extrapolation.choose_rcond`, as the `induce` "
            "flow does)."
            if args.reach_truncation == "cv"
            else "The span solutions are exact (rcond 1e-6)."
        ),
        "",
        *markdown_table(rows),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(text))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
