"""An intervention along a further χ mode (one beyond the fin): the mode picked by a rule
fixed before any retraining, the change it should make stated from that rule, and the
readings that say whether it did.

**The rule** (:func:`pick_further_mode`). On the standardized χ̃ at the weights step
(``decomposition.standardize`` then ``decompose``: χ̃ v_k = σ_k u_k), over the leading modes
2 … ``N_MODES`` other than the fin mode (PC1 carries most of the variance and follows every
unit's loss level), the mode whose unit loadings v_k separate one pattern class the most:
the largest |point-biserial r| between v_k and the class's indicator
(:func:`class_separation`). A unit's class (:func:`class_labels`) is its target token's
primary pattern class (``token_classes.PRIMARY_CLASSES``), except that every space inside
a run is ``"space_run"``: most of them repeat the bigram "two spaces" and would otherwise
fill the ``induction`` class. ``space_run`` is the fin's and is not a candidate; classes
with fewer than ``MIN_CLASS_UNITS`` probe units are left out.

**The intervention** (:func:`further_mode_weights`, "amplify"). dμ = s·σ_k·u_k with s the
sign of that r, so dh = (1/nβ)·χ̃†·dμ = s·v_k/nβ (``intervention.solve_intervention``; nβ,
the store's ``n_beta``, enters only here) up-weights the units on the class's side of the
mode. dh is known on the probe units; every unit (training or probe) gets the mean dh of
its fin class (``fin_weights.fin_classes``) over the probes, and ρ = 1 + α·dh/max|dh|,
clipped at 0, mean 1 over the training units (``intervention.weights_from_intervention``).

**The prediction** (:func:`prediction`, written to the plan before retraining). Against
the baseline retrained from the same initialization and data order, read at the same
final step:

1. *loss*: the validation loss on the class's targets falls relative to the other
   targets: Δ(loss_class − loss_other) < 0;
2. *map*: χ recomputed on the retrained model separates the class more: its largest
   |r| over the leading modes (:func:`class_separation`) is above the baseline's;
3. *loop*: the components' localized losses ⟨φ_C⟩ move along the first-order prediction
   nβ·χ·dh (``induction.loop.predicted_shift`` with the probe units' weights; cosine > 0
   over the components).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.data.token_classes import PRIMARY_CLASSES
from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.intervention import weights_from_intervention
from patterning_core.experiments.induction.loop import (
    along_direction,
    compare_shift,
    predicted_shift,
)
from patterning_core.experiments.spacing.fin_store import N_MODES
from patterning_core.experiments.spacing.fin_weights import fin_classes, mode_solution
from patterning_core.experiments.spacing.science import unit_losses
from patterning_core.model.checkpoints import final_checkpoint

__all__ = [
    "MIN_CLASS_UNITS",
    "SPACE_RUN",
    "FurtherModeWeights",
    "class_labels",
    "class_loss",
    "class_separation",
    "further_mode_weights",
    "outcome",
    "pick_further_mode",
    "plan_further_mode",
    "prediction",
    "run_class_loss",
    "sampler_noise",
    "separation_of",
]

MIN_CLASS_UNITS = 20  # a class needs this many probe units to be read on a mode


SPACE_RUN = "space_run"


def class_labels(tokens: Tensor, strings: Sequence[str]) -> np.ndarray:
    """Class of each unit ``[B, T − 1]`` (str): ``"space_run"`` for a space inside a run
    (``fin_weights.fin_classes``' ``space@…``), else the primary pattern class of its
    target token (``token_classes.PatternClasses.primary``)."""
    labels = fin_classes(tokens, strings)
    return np.where(np.char.startswith(labels.astype(str), "space@"), SPACE_RUN, labels)


def class_separation(unit_loading: xr.DataArray, labels: np.ndarray) -> xr.DataArray:
    """Point-biserial r (Pearson's r of the loadings with the 0/1 indicator) of every
    mode's unit loadings and every pattern class with at least ``MIN_CLASS_UNITS`` units.

    ``unit_loading``: ``(mode, unit)``; ``labels``: class per unit, flattened in the units'
    order. Returns ``(mode, pattern_class)``; the sign follows the mode's sign convention.
    """
    labels = np.asarray(labels).ravel()
    if labels.shape != (unit_loading.sizes["unit"],):
        raise ValueError(
            f"{labels.size} class labels for {unit_loading.sizes['unit']} units: one per unit."
        )
    names = [
        c
        for c in (*PRIMARY_CLASSES, SPACE_RUN)
        if MIN_CLASS_UNITS <= (labels == c).sum() < labels.size
    ]
    v = unit_loading.transpose("mode", "unit").values.astype(np.float64)
    v = v - v.mean(axis=1, keepdims=True)
    x = np.stack([(labels == c).astype(np.float64) for c in names], axis=1)
    x = x - x.mean(axis=0, keepdims=True)
    denom = np.linalg.norm(v, axis=1)[:, None] * np.linalg.norm(x, axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (v @ x) / np.where(denom > 0, denom, 1.0), np.nan)
    return xr.DataArray(
        r,
        dims=("mode", "pattern_class"),
        coords={"mode": unit_loading.mode.values, "pattern_class": names},
    )


def pick_further_mode(separation: xr.DataArray, exclude: Sequence[int] = ()) -> dict:
    """The rule of the module docstring: ``{"mode", "pattern_class", "r"}`` over modes ≥ 2
    not in ``exclude`` (the fin mode) and classes other than ``space_run``, the largest |r|
    of ``separation``."""
    keep = [m for m in separation.mode.values if m >= 2 and m not in set(exclude)]
    classes = [c for c in separation.pattern_class.values if c != SPACE_RUN]
    if not keep or not classes:
        raise ValueError(
            "no mode beyond PC1 and the fin mode, or no pattern class with enough probe "
            f"units (≥ {MIN_CLASS_UNITS}): use more leading modes or more probe sequences."
        )
    table = separation.sel(mode=keep, pattern_class=classes)
    values = np.nan_to_num(np.abs(table.values), nan=-1.0)
    i, j = np.unravel_index(int(np.argmax(values)), values.shape)
    return {
        "mode": int(table.mode.values[i]),
        "pattern_class": str(table.pattern_class.values[j]),
        "r": float(table.values[i, j]),
    }


def prediction(pick: dict) -> list[str]:
    """The three predicted changes of the module docstring, in words, for ``pick``."""
    k, c, r = pick["mode"], pick["pattern_class"], pick["r"]
    return [
        f"loss: amplifying mode {k} (the side of the {c} tokens, r = {r:+.2f}) lowers the "
        f"validation loss on {c} targets relative to other targets, against the baseline",
        f"map: χ recomputed on the retrained model separates the {c} tokens more (largest "
        "|r| over the leading modes) than the baseline's χ does",
        "loop: the components' localized losses move along nβ·χ·dh (cosine > 0)",
    ]


@dataclass
class FurtherModeWeights:
    """``weights``: ρ ``float32 [N, T − 1]`` of the training units (mean 1);
    ``probe_weights``: ρ of the probe units ``float64 [unit]`` by the same class rule (for
    the loop's prediction); ``summary``: JSON-able numbers for the plan and report."""

    weights: np.ndarray
    probe_weights: np.ndarray
    summary: dict


def further_mode_weights(
    chi: xr.DataArray,
    n_beta: float,
    pick: dict,
    probe_tokens: Tensor,
    train_tokens: Tensor,
    strings: Sequence[str],
    alpha: float = 1.0,
) -> FurtherModeWeights:
    """Amplify weights along ``pick`` (:func:`pick_further_mode`) for every training unit.

    ``chi``: ``(component, unit)`` at the checkpoint, as stored (no nβ factor), units in the
    order of ``probe_tokens`` ``[P, T]`` flattened; ``train_tokens`` ``[N, T]``.
    """
    chi = chi.transpose("component", "unit")
    s = float(np.sign(pick["r"]))
    probe_classes = fin_classes(probe_tokens, strings).ravel()
    _, fit, sigma = mode_solution(chi, n_beta, int(pick["mode"]), s, probe_classes)
    train_classes = fin_classes(train_tokens, strings)
    names, index, counts = np.unique(train_classes, return_inverse=True, return_counts=True)
    # classes only the probes hold get dh = 0 and count for nothing in the mean
    extra = np.setdiff1d(np.unique(probe_classes), names)
    dh_class = np.r_[fit.predict(names), np.zeros(len(extra))]
    counts = np.r_[counts, np.zeros(len(extra))]
    per_class = weights_from_intervention(dh_class, alpha, "clip", counts=counts)
    class_rho = dict(zip([*names.tolist(), *extra.tolist()], per_class.tolist(), strict=True))
    rho = per_class[index].reshape(train_classes.shape)
    probe_rho = np.array([class_rho[str(c)] for c in probe_classes])
    summary = {
        **pick,
        "sign": s,
        "singular_value": sigma,
        "fit_r2": fit.r2,
        "class_weight": class_rho,
        "probe_weight_mean": float(probe_rho.mean()),
        "dose": float(np.abs(rho - 1).mean()),
        "zero_weights": int((rho == 0).sum()),
        "max_weight": float(rho.max()),
        "prediction": prediction(pick),
        "components": [str(c) for c in chi.component.values],
        "predicted_shift": predicted_shift(chi.values, probe_rho, n_beta).tolist(),
    }
    return FurtherModeWeights(rho.astype(np.float32), probe_rho, summary)


def plan_further_mode(
    chi: xr.DataArray,
    n_beta: float,
    fin_mode: int,
    probe_tokens: Tensor,
    train_tokens: Tensor,
    strings: Sequence[str],
    alpha: float = 1.0,
) -> FurtherModeWeights:
    """The whole plan at the weights step: every leading mode's class separation, the
    rule's pick (:func:`pick_further_mode`, the fin mode ``fin_mode`` left out), and its
    amplify weights (:func:`further_mode_weights`); the separation table is added to the
    summary as ``{class: [r per mode]}`` with ``separation_modes``."""
    modes = decompose(standardize(chi.transpose("component", "unit"), "component"), "component")
    loading = modes["unit_loading"].sel(mode=modes.mode.values[:N_MODES])
    table = class_separation(loading, class_labels(probe_tokens, strings).ravel())
    pick = pick_further_mode(table, exclude=[fin_mode])
    plan = further_mode_weights(chi, n_beta, pick, probe_tokens, train_tokens, strings, alpha)
    plan.summary["separation_modes"] = [int(m) for m in table.mode.values]
    plan.summary["separation"] = {
        str(c): [float(v) for v in table.sel(pattern_class=c).values]
        for c in table.pattern_class.values
    }
    plan.summary["fin_mode"] = int(fin_mode)
    return plan


def run_class_loss(run_dir: str, data: dict, eval_seqs: int, pattern_class: str) -> dict:
    """:func:`class_loss` of the last checkpoint of ``run_dir`` on the first ``eval_seqs``
    validation sequences of ``data`` (the units' classes by :func:`class_labels`)."""
    _, final = final_checkpoint(run_dir)
    tokens = load_lm_tokens(data, final.config)
    val = tokens.val[:eval_seqs]
    losses = unit_losses(final.params, final.config, val).numpy()
    return class_loss(losses, class_labels(val, tokens.token_strings), pattern_class)


def separation_of(chi: xr.DataArray, labels: np.ndarray, pattern_class: str) -> dict:
    """How strongly χ ``(component, unit)`` (raw, as stored) separates one class: over the
    leading ``N_MODES`` modes of its standardized form, the largest |r| of
    :func:`class_separation` for ``pattern_class``. Returns ``{"separation", "mode", "r"}``
    (``r`` signed, on that mode; NaN when the class has too few units)."""
    modes = decompose(standardize(chi.transpose("component", "unit"), "component"), "component")
    loading = modes["unit_loading"].sel(mode=modes.mode.values[:N_MODES])
    table = class_separation(loading, labels)
    if pattern_class not in table.pattern_class.values:
        return {"separation": float("nan"), "mode": None, "r": float("nan")}
    r = table.sel(pattern_class=pattern_class)
    best = int(np.nanargmax(np.abs(r.values)))
    return {
        "separation": float(abs(r.values[best])),
        "mode": int(r.mode.values[best]),
        "r": float(r.values[best]),
    }


def class_loss(losses: np.ndarray, labels: np.ndarray, pattern_class: str) -> dict:
    """Mean per-unit loss ``losses [..]`` on units of ``pattern_class`` and on all others
    (``labels`` in the same layout): ``{"class", "other", "gap"}`` (gap = class − other)."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    mask = np.asarray(labels).ravel() == pattern_class
    if not mask.any() or mask.all():
        raise ValueError(f"no units of {pattern_class!r}, or nothing else, to compare.")
    c, o = float(losses[mask].mean()), float(losses[~mask].mean())
    return {"class": c, "other": o, "gap": c - o}


def outcome(plan: dict, runs: Sequence[dict]) -> dict:
    """The prediction read against the runs, per seed with a baseline and a
    ``chi_further_mode`` run.

    ``plan``: the weights' summary (``pattern_class``, ``predicted_shift`` [component],
    ``components``); ``runs``: ``{"seed", "condition", "further"}`` with ``further`` =
    ``{"loss": class_loss(...), "separation": separation_of(...), "phi": [component],
    "phi_se": [component]}`` read at the same final step for every run.

    Returns ``{"seeds": [{"seed", "conditions": {condition: {"loss_gap_change",
    "separation_change", "along": (value, se)}}, "loop": {cosine, gain, …}, "met": {"loss",
    "map", "loop"}}], "met_every_seed": {"loss", "map", "loop"}}``. Every condition other
    than the baseline is read the same way (the change of the class's loss gap and of its
    separation from the seed's baseline, and its shift of ⟨φ_C⟩ projected on the predicted
    shift, with its standard error), so the further mode's changes stand beside what the
    other re-weightings of the same experiment do; ``loop`` and ``met`` are the further
    mode's own.
    """
    predicted = np.asarray(plan["predicted_shift"], dtype=np.float64)
    seeds = []
    for seed in sorted({r["seed"] for r in runs}):
        by = {r["condition"]: r["further"] for r in runs if r["seed"] == seed}
        if "baseline" not in by or "chi_further_mode" not in by:
            continue
        for f in by.values():
            if list(f.get("components", plan["components"])) != list(plan["components"]):
                raise ValueError(
                    f"seed {seed}: a run's χ store has components {f['components']}, the plan "
                    f"{plan['components']}: every run must be read on the plan's workload."
                )
        base = by.pop("baseline")
        phi0, se0 = np.asarray(base["phi"]), np.asarray(base["phi_se"])
        changes = {
            c: {
                "loss_gap_change": f["loss"]["gap"] - base["loss"]["gap"],
                "separation_change": f["separation"]["separation"]
                - base["separation"]["separation"],
                "along": along_direction(
                    np.asarray(f["phi"]) - phi0, np.hypot(np.asarray(f["phi_se"]), se0), predicted
                ),
            }
            for c, f in by.items()
        }
        moved = changes["chi_further_mode"]
        shift = np.asarray(by["chi_further_mode"]["phi"]) - phi0
        loop = compare_shift(shift, predicted, list(plan["components"]))
        seeds.append(
            {
                "seed": seed,
                "conditions": changes,
                "loop": loop,
                "met": {
                    "loss": bool(moved["loss_gap_change"] < 0),
                    "map": bool(moved["separation_change"] > 0),
                    "loop": bool(loop["cosine"] > 0),
                },
            }
        )
    every = {
        key: bool(seeds and all(s["met"][key] for s in seeds)) for key in ("loss", "map", "loop")
    }
    return {"seeds": seeds, "met_every_seed": every}


def sampler_noise(fins: Sequence[dict], readings: Sequence[dict], plan: dict | None) -> dict:
    """What two SGLD estimates of one model's χ (same checkpoint and probe units, two
    sampler seeds) disagree on, read as every retrained run is read: the fin metric
    (``fins``: ``fin_store.fin_at`` of each), and with a further-mode ``plan`` the class
    separation and the localized losses projected on the predicted shift (``readings``:
    the further-mode readings of each, as :func:`outcome` takes them). A run's change read
    off one χ estimate carries this on top of its baseline's.

    Returns ``{"fin_metric": [a, b], "fin_metric_difference", and with a plan
    "separation": [a, b], "separation_difference", "phi_along_prediction": [value, se]}``
    (differences second − first; ``se`` from the chains, for comparison with the value).
    """
    first, second = fins
    out = {
        "fin_metric": [first["metric"], second["metric"]],
        "fin_metric_difference": second["metric"] - first["metric"],
    }
    if plan is not None:
        a, b = readings
        value, se = along_direction(
            np.asarray(b["phi"]) - np.asarray(a["phi"]),
            np.hypot(np.asarray(a["phi_se"]), np.asarray(b["phi_se"])),
            plan["predicted_shift"],
        )
        sa, sb = a["separation"]["separation"], b["separation"]["separation"]
        out.update(
            separation=[sa, sb],
            separation_difference=sb - sa,
            phi_along_prediction=[value, se],
        )
    return out
