"""Amplify / Suppress weights of the spacing experiment: weighting along the χ mode of the
heads that predict whitespace (``science`` has the scores, classes and correlations).

The spacing mode is the χ mode whose unit loadings correlate most (in absolute value) with
the whitespace-target indicator; the weights along it follow ``estimators.mode_weights``
with the heads' spacing scores in place of prefix-matching scores, extrapolated to the
training units by spacing class. Amplify is that rule's ``"induce"`` condition (the heads
with high spacing scores express their units more), Suppress its ``"repress"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.decomposition import decompose
from patterning_core.estimators.mode_weights import mode_weights
from patterning_core.experiments.spacing.science import (
    spacing_classes,
    spacing_scores,
    spacing_units,
    whitespace_correlations,
)
from patterning_core.model.checkpoints import checkpoint_path, final_checkpoint
from patterning_core.sampling.config import ConfigError
from patterning_core.store.chi_store import chi_at
from patterning_core.store.workloads import build_workload

# This experiment's names of the conditions of ``mode_weights`` (run labels, report rows):
# Amplify makes the heads with high spacing scores express their units more (the Induce
# rule of induction_patterning with spacing scores in place of prefix-matching scores).
CONDITION_OF = {"induce": "amplify", "repress": "suppress"}


@dataclass
class SpacingWeights:
    """``weights``: ρ ``float32 [N, T − 1]`` for ``"induce"`` (Amplify) and ``"repress"``
    (Suppress); ``spacing``: the numbers the report reads (JSON-able)."""

    weights: dict[str, np.ndarray]
    spacing: dict


def spacing_weights(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str,
    data: dict,
    alpha: float,
    eval_seqs: int,
) -> SpacingWeights:
    """Amplify/Suppress weights for every training unit.

    Spacing scores of the heads at the reference run's last checkpoint (on ``eval_seqs``
    validation sequences); χ at ``chi_step`` from the store (``chi_at``); the probes rebuilt
    from the store's workload at the reference's checkpoint ``chi_step``. A ``ConfigError``
    if no probe unit predicts whitespace.
    """
    chi, n_beta, ds = chi_at(chi_store, chi_step)
    last_step, final = final_checkpoint(reference_run_dir)
    config = final.config
    tokens = load_lm_tokens(data, config)
    strings = tokens.token_strings
    scores = spacing_scores(final.params, config, tokens.val[:eval_seqs], strings)

    workload = json.loads(ds.attrs["workload"])
    probes = build_workload(workload, checkpoint_path(reference_run_dir, chi_step)).probes[0]
    codes, names = spacing_classes(probes, strings)
    chi = chi.assign_coords(
        spacing_class=("unit", np.array([names[c] for c in codes.ravel()], dtype=object))
    )
    is_spacing = spacing_units(probes, strings).numpy().ravel()
    if not is_spacing.any():
        raise ConfigError("no probe unit predicts whitespace: use a text corpus as data.")
    modes = decompose(chi.transpose("component", "unit"), "component")
    correlations = whitespace_correlations(modes, is_spacing)
    mode = int(correlations.mode.values[np.nanargmax(np.abs(correlations.values))])
    train_codes, _ = spacing_classes(tokens.train, strings)
    result = mode_weights(
        chi,
        scores,
        train_codes,
        names,
        n_beta,
        alpha=alpha,
        class_coord="spacing_class",
        mode=mode,
    )
    s = result.summary
    spacing = {
        "chi_step": chi_step,
        "scores_step": last_step,
        "reference_spacing_scores": scores,
        "spacing_heads": sorted(scores, key=scores.get, reverse=True)[:2],
        "mode": s["mode"],
        "explained_variance": s["explained_variance"],
        "alignments": s["alignments"],
        "whitespace_correlation": {
            int(m): float(c)
            for m, c in zip(correlations.mode.values, correlations.values, strict=True)
        },
        "probe_spacing_units": int(is_spacing.sum()),
        "probe_units": int(is_spacing.size),
        "patterning": {
            k: s[k]
            for k in ("class_dh_induce", "fit_r2", "target_retained", "conditions", "sign_rule")
        },
    }
    return SpacingWeights(weights=result.weights, spacing=spacing)
