"""Induce / Repress weights of the induction-patterning experiment, from a χ store and the
reference run (method.md §7, demonstration 1).

Head scores: prefix-matching scores at the reference run's last checkpoint; classes: the
primary pattern class of every training unit (:func:`patterning.unit_classes`); the weights
along the induction mode are ``estimators.mode_weights``. :func:`induction_weights` returns
the arrays and the JSON-able numbers the report reads; writing them is the caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.decomposition import aligned_mode, decompose
from patterning_core.estimators.mode_weights import mode_weights, per_chain_class_dh
from patterning_core.estimators.susceptibility import chi_from_stats
from patterning_core.experiments.induction.patterning import head_scores, unit_classes
from patterning_core.model.checkpoints import checkpoint_path, file_sha256, final_checkpoint
from patterning_core.store.chi_store import StoreError, chi_at, read_stats


@dataclass
class InductionWeights:
    """``weights``: ρ ``float32 [N, T − 1]`` per condition (``"induce"``, ``"repress"``);
    ``info``: ``{"summary", "chi_step", "chi_store", "per_chain_class_dh",
    "alignment_by_checkpoint", "scores_from", "reference_matches_store"}`` (JSON-able);
    ``per_chain_error``: why there is no per-chain check (None: there is one)."""

    weights: dict[str, np.ndarray]
    info: dict
    per_chain_error: str | None = None


def alignment_by_checkpoint(ds: xr.Dataset, scores: Mapping[str, float]) -> list[dict]:
    """Induction mode, its alignment and explained variance at every assembled checkpoint."""
    rows = []
    for step in ds.checkpoint.values:
        if not bool(ds["chi_complete"].sel(checkpoint=step)):
            continue
        modes = decompose(ds["chi"].sel(checkpoint=step).load(), "component")
        mode, alignment = aligned_mode(modes, scores)
        rows.append(
            {
                "step": int(step),
                "mode": mode,
                "alignment": alignment,
                "explained_variance": float(modes["explained_variance"].sel(mode=mode)),
            }
        )
    return rows


def store_digest_matches(ds: xr.Dataset, run_dir: str | os.PathLike[str], step: int) -> bool | None:
    """Whether the reference run's checkpoint at ``step`` is the one χ was computed from
    (None: the store records no digest or the run has no such checkpoint)."""
    recorded = json.loads(ds.attrs.get("checkpoint_digests", "{}") or "{}").get(str(step))
    path = checkpoint_path(run_dir, step)
    if recorded is None or not path.is_file():
        return None
    return file_sha256(path) == recorded


def induction_weights(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str,
    data: dict,
    alpha: float,
    rcond: float,
    negative: str,
) -> InductionWeights:
    """Induce/Repress weights for every training unit from χ at ``chi_step`` of ``chi_store``
    (``store.chi_store.chi_at``: a ``ConfigError`` if it is not there) and the head scores
    at the last checkpoint of ``reference_run_dir``; with a per-chain check of the class
    means of dh when the store still has every shard's statistics."""
    chi, n_beta, ds = chi_at(chi_store, chi_step)
    last_step, ckpt = final_checkpoint(reference_run_dir)
    scores = head_scores(ckpt.params, ckpt.config)
    tokens = load_lm_tokens(data, ckpt.config)
    codes, names = unit_classes(tokens.train, tokens.token_strings)
    result = mode_weights(
        chi, scores, codes, names, n_beta, alpha=alpha, rcond=rcond, negative=negative
    )
    summary = result.summary
    error = None
    try:
        chains = chi_from_stats(read_stats(chi_store, chi_step), per_chain=True)
        per_chain = per_chain_class_dh(chains, summary["target_induce"], n_beta, rcond)
    except StoreError as err:
        error, per_chain = str(err), {}
    info = {
        "summary": summary,
        "chi_step": chi_step,
        "chi_store": chi_store,
        "per_chain_class_dh": per_chain,
        "alignment_by_checkpoint": alignment_by_checkpoint(ds, scores),
        "scores_from": {"run_dir": reference_run_dir, "step": last_step},
        "reference_matches_store": store_digest_matches(ds, reference_run_dir, chi_step),
    }
    return InductionWeights(weights=result.weights, info=info, per_chain_error=error)
