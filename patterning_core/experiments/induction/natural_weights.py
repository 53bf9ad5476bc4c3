"""Weights for every training token from χ of a model trained on natural text: the
induction mode found (``mode_search``), the probes' solution extrapolated by per-token
features (``estimators.feature_extrapolation``), and doses stated as weight ratios.

Inputs: χ ``(component, unit)`` as stored (χ_z(φ_C) = −Cov[φ_C, ℓ_z − L], no nβ factor; χ <
0: component C *expresses* unit z), its nβ, the probe tokens ``[P, T]`` whose loss units are
χ's units (row-major), the training tokens ``[N, T]``, the token strings, and each head's
later circuit score (layer-1 prefix matching, layer-0 previous-token; the reference run's
last checkpoint).

1. Decompose the per-component standardized χ̃ and find the induction mode among the
   leading modes (``mode_search.find_induction_mode``); Induce's target is dμ = s·u_k with
   the sign rule of ``estimators.mode_weights.induce_sign`` (the heads that later score
   high lower their localized loss relative to the others). Repress is −dμ.
2. dh = (1/nβ)·χ̃†·dμ on the probe units (``intervention.solve_intervention``; nβ enters
   only here).
3. Features of every unit (``unit_features``): held-out evaluation on half of the probe
   sequences (R², target cosine), then a fit on all probes, applied to every training unit.
   ``extrapolator="regression"`` regresses the exact dh on the features;
   ``extrapolator="span"`` solves the patterning equation in the features' span instead
   (``feature_extrapolation.fit_feature_solution``: the weights that the features can
   express, chosen for the response; the regression's held-out numbers are reported
   beside it), truncated at the rcond that cross-validation over the fitted half's probe
   sequences picks (``feature_extrapolation.choose_rcond``; the held-out half plays no part,
   and the fit on all probes keeps that rcond).
   With ``balance_positions`` the extrapolated dĥ of every unit is centred by the training
   units' mean dĥ at its context position (``position_profile.balance_positions``): the
   in-context features grow with the position, so unbalanced weights also move weight
   between early and late positions (measured alone on the ``induce_wide`` substrate, that
   profile moved formation by 5–10 %: ``scripts/induce_formation_levers.py``).
4. ρ = 1 + α·dĥ/max|dĥ| (clipped at 0, mean 1) with α chosen so that the top/bottom-decile
   weight ratio is ``ratio`` (4: one reading of the paper's "4× weight modification"),
   separately for each condition.
5. Controls at the same ratio (``controls``): a random target in the other leading modes,
   solved and extrapolated the same way; the Induce weights shuffled within pattern
   classes; and the Induce weights shuffled within the finer cells of pattern class ×
   sequence kind (``controls.cell_codes``: the last ``n_synthetic`` training sequences are
   synthetic), which keeps every cell's total weight and loses only which token of a cell
   gets which weight.
6. With ``class_neutral``, the weights of every solved condition (Induce, Repress, the
   random target) are made class-neutral before the controls are drawn
   (``controls.class_neutral_at_ratio``: ρ^p divided by its pattern class's mean, p chosen
   so that the decile ratio is again ``ratio``). No pattern class is re-weighted then, so
   the class shuffle (control b) re-weights nothing at all, and whatever a condition does
   comes from which units of a class χ weights up. The probe weights follow the same rule
   (ρ_probe^p over the training units' class mean of ρ^p).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.data.token_classes import PRIMARY_CLASSES, TokenKinds
from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.feature_extrapolation import (
    RidgeFit,
    alpha_for_ratio,
    choose_rcond,
    cosine,
    decile_ratio,
    feature_solution_evaluation,
    fit_feature_solution,
    fit_ridge,
    heldout_evaluation,
    sequence_halves,
)
from patterning_core.estimators.intervention import solve_intervention, weights_from_intervention
from patterning_core.estimators.mode_weights import induce_sign
from patterning_core.experiments.induction.cell_weights import (
    cell_indicators,
    circuit_target,
    solve_cells,
)
from patterning_core.experiments.induction.controls import (
    cell_codes,
    class_means,
    class_neutral_at_ratio,
    random_mode_target,
    shuffle_within_classes,
)
from patterning_core.experiments.induction.mode_search import (
    find_induction_mode,
    subset_token_correlations,
    token_ceiling,
)
from patterning_core.experiments.induction.position_profile import (
    balance_positions,
    position_profile,
    profile_summary,
)
from patterning_core.experiments.induction.token_groups import GROUPS, token_groups
from patterning_core.experiments.induction.unit_features import (
    predictable_units,
    unit_feature_names,
    unit_features,
)
from patterning_core.sampling.config import ConfigError

CONDITIONS = (
    "induce",
    "repress",
    "control_random",
    "control_shuffled",
    "control_cell_shuffled",
)
EXTRAPOLATORS = ("regression", "span", "cells")
TARGETS = ("mode", "circuit")
N_CLASSES = len(PRIMARY_CLASSES)
NO_MODE = -1  # random_mode_target excludes no leading mode


@dataclass
class NaturalWeights:
    """``weights``: ρ ``float32 [N, T − 1]`` (mean 1) per condition of :data:`CONDITIONS`;
    ``probe``: per probe unit, ``dh`` (exact), ``dh_fit`` (the extrapolator's), and ρ of
    each condition (``rho_<condition>``), each ``[units]``; ``summary``: JSON-able."""

    weights: dict[str, np.ndarray]
    probe: dict[str, np.ndarray]
    summary: dict


def _beside_regression(held: dict) -> dict:
    """For an extrapolator not fitted to dh (span, cells): no R² of its own, the exact
    solution's target cosine and the regression's held-out numbers beside it."""
    return {
        "exact_target_cosine": held["exact_target_cosine"],
        "heldout_r2": None,
        "fit_r2": None,
        "regression": {key: held[key] for key in ("heldout_r2", "heldout_target_cosine", "fit_r2")},
    }


def predict_units(
    fits: Sequence[RidgeFit], tokens: Tensor, kinds: TokenKinds, chunk: int = 2048
) -> tuple[list[np.ndarray], np.ndarray]:
    """``([dĥ float32 [N, T − 1] per fit], class code int8 [N, T − 1])`` of every unit of
    ``tokens``: the features are computed once, ``chunk`` sequences at a time (the whole
    feature matrix of a corpus does not need to exist at once), and every fit applied."""
    dh: list[list[np.ndarray]] = [[] for _ in fits]
    codes = []
    for i in range(0, tokens.shape[0], chunk):
        x = unit_features(tokens[i : i + chunk], kinds)
        for out, fit in zip(dh, fits, strict=True):
            out.append(fit.predict(x).astype(np.float32))
        codes.append(x[..., :N_CLASSES].argmax(-1).astype(np.int8))
    return [np.concatenate(d) for d in dh], np.concatenate(codes)


def check_target_mode(target_mode: int | None, n_leading: int) -> None:
    """A given target mode must be a leading mode beyond PC1 (the pattern all components
    share): ``ConfigError`` naming the range otherwise; None (the search's mode) passes."""
    if target_mode is not None and not 2 <= target_mode <= n_leading:
        raise ConfigError(
            f"target_mode {target_mode} must be a leading mode beyond PC1: 2…{n_leading} "
            "(n_leading; PC1 is the pattern all components share)."
        )


def same_rule(dh: np.ndarray, dh_train: np.ndarray, alpha: float) -> np.ndarray:
    """ρ of units with ``dh`` under the training units' rule: ρ = max(0, 1 + α·dh/max|dh_train|)
    divided by the training units' mean of the same (what ``weights_from_intervention`` does
    to ``dh_train``), so probe weights read on the training weights' scale."""
    scale = float(np.abs(dh_train).max())
    train_raw = np.maximum(1.0 + alpha * np.asarray(dh_train, dtype=np.float64) / scale, 0.0)
    raw = np.maximum(1.0 + alpha * np.asarray(dh, dtype=np.float64) / scale, 0.0)
    return raw / train_raw.mean()


def applied_target_cosine(
    chi_std: np.ndarray,
    rho: np.ndarray,
    d_mu: np.ndarray,
    n_beta: float,
    fit_mask: np.ndarray,
) -> dict[str, float]:
    """Cosine with Induce's target ``d_mu`` of the response that the applied probe weights
    ``rho [units]`` predict, nβ·χ̃·(ρ/ρ̄ − 1) (ρ̄ their mean over the units read): over all
    probe units (``"all"``) and over each half of ``fit_mask`` (``"fit_half"``,
    ``"heldout_half"``). The weights are the all-probe fit's, after clipping and (with
    ``class_neutral``) the class-neutral power, so this is what the weights actually ask
    for; a gap between the halves is the probes' noise. Induce near +1, Repress near −1."""
    chi_std = np.asarray(chi_std, dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    d_mu = np.asarray(d_mu, dtype=np.float64)
    out = {}
    for name, mask in (
        ("all", np.ones_like(fit_mask, dtype=bool)),
        ("fit_half", fit_mask),
        ("heldout_half", ~fit_mask),
    ):
        dh = rho[mask] / rho[mask].mean() - 1.0
        out[name] = cosine(n_beta * chi_std[:, mask] @ dh, d_mu)
    return out


def _neutral(
    weights: np.ndarray,
    codes: np.ndarray,
    probe_rho: np.ndarray,
    probe_codes: np.ndarray,
    ratio: float,
    condition: str,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(training weights float32, probe weights float64, power)`` of one condition made
    class-neutral at ``ratio`` (step 6 of the module doc): the training units' ρ^p over
    their class mean; the probe units' ρ^p over the same training class means (a class no
    training unit has keeps its probe weights' own mean)."""
    try:
        neutral, power = class_neutral_at_ratio(weights, codes, ratio)
    except ValueError as err:
        raise ConfigError(
            f"class_neutral ({condition}): {err} Lower the dose (ratio) or drop "
            "class_neutral: this target's weights move whole pattern classes, hardly units "
            "within them."
        ) from err
    means = class_means(weights, codes, power)
    probe = np.asarray(probe_rho, dtype=np.float64) ** power
    out = np.empty_like(probe)
    for code in np.unique(probe_codes):
        here = probe_codes == code
        out[here] = probe[here] / means.get(int(code), probe[here].mean())
    return neutral.astype(np.float32), out, power


def natural_weights(
    chi: xr.DataArray,
    n_beta: float,
    head_scores: Mapping[str, float],
    probe_tokens: Tensor,
    train_tokens: Tensor,
    strings: Sequence[str],
    *,
    ratio: float = 4.0,
    n_leading: int = 8,
    ridge: float = 1e-3,
    rcond: float = 1e-3,
    seed: int = 0,
    extrapolator: str = "regression",
    target_mode: int | None = None,
    balance: bool = False,
    n_synthetic: int = 0,
    target: str = "mode",
    class_neutral: bool = False,
) -> NaturalWeights:
    """The weights of the module doc, with a summary for the report and ``results.json``.

    ``balance``: centre the extrapolated dĥ per context position (step 3 of the module doc);
    the held-out target cosine of the centred weights is reported as
    ``extrapolation.induce.balanced_heldout_target_cosine`` (the fit on the fitted half,
    centred by *its* training means, read on the held-out half). Every condition's profile
    over positions is in ``summary["position_profile"]`` either way.

    ``target_mode``: steer along this leading mode instead of the one the search picks (a
    design choice, reported as such: ``summary["mode"]["target"]`` is ``"given"`` and
    ``found`` is true only if it is also the induction mode the search found).

    ``class_neutral``: step 6 of the module doc; the power of each condition is
    ``summary["dose"]["class_neutral_power"]``."""
    if extrapolator not in EXTRAPOLATORS:
        raise ValueError(f"extrapolator must be one of {EXTRAPOLATORS}, not {extrapolator!r}.")
    check_target_mode(target_mode, n_leading)
    chi = chi.transpose("component", "unit")
    units = probe_tokens.shape[0] * (probe_tokens.shape[1] - 1)
    if chi.sizes["unit"] != units:
        raise ValueError(
            f"χ has {chi.sizes['unit']} units but the probes have {units} loss units: the "
            "probes are not the ones χ was estimated on."
        )
    kinds = TokenKinds.from_strings(strings)
    z = standardize(chi, "component")
    modes = decompose(chi, "component")
    predictable = predictable_units(probe_tokens).ravel()
    found = find_induction_mode(modes, head_scores, predictable, n_leading=n_leading)
    if "synthetic" in chi.coords:  # probes of both kinds: each kind's own token correlation
        synthetic = np.asarray(chi["synthetic"].values, dtype=bool)
        found["table"] = subset_token_correlations(
            modes, found["table"], predictable, {"natural": ~synthetic, "synthetic": synthetic}
        )
    sequence = np.repeat(np.arange(probe_tokens.shape[0]), probe_tokens.shape[1] - 1)
    ceiling = token_ceiling(chi, predictable, sequence)
    k = found["mode"] if target_mode is None else target_mode
    steered = next(row for row in found["table"] if row["mode"] == k)
    s = induce_sign(modes, k, head_scores)
    u = modes["component_loading"].sel(mode=k).values
    if target == "circuit":
        circuit = circuit_target([str(c) for c in chi.component.values], head_scores)
        targets = {"induce": circuit, "repress": -circuit}
        targets["control_random"] = random_mode_target(modes, NO_MODE, n_leading, seed)
    else:
        targets = {"induce": s * u, "repress": -s * u}
        targets["control_random"] = random_mode_target(modes, k, n_leading, seed)

    features = unit_features(probe_tokens, kinds).reshape(units, -1)
    fit_mask, _ = sequence_halves(sequence, seed)
    probe_synthetic = (
        np.asarray(chi["synthetic"].values, dtype=bool)
        if "synthetic" in chi.coords
        else np.zeros(units, dtype=bool)
    )
    probe_cells = cell_indicators(probe_synthetic, predictable)

    def solve_and_fit(target: np.ndarray) -> dict:
        dh = solve_intervention(z, target, n_beta, rcond=rcond).values
        held = heldout_evaluation(z.values, dh, features, target, n_beta, fit_mask, ridge)
        evaluation = {key: v for key, v in held.items() if key != "fit"}
        x_probe, half = features, None
        if extrapolator == "regression":
            model = fit_ridge(features, dh, ridge)
            half = held["fit"]
        elif extrapolator == "cells":
            cells = solve_cells(z.values, probe_cells, target, n_beta, fit_mask)
            model = cells["model"]
            evaluation = {
                "heldout_target_cosine": cells["heldout_target_cosine"],
                "fit_target_cosine": cells["fit_target_cosine"],
                "target_cosine": cells["target_cosine"],
                **_beside_regression(held),
            }
            x_probe = probe_cells
        else:
            span_rcond, rcond_scores = choose_rcond(
                z.values[:, fit_mask], features[fit_mask], target, n_beta, sequence[fit_mask]
            )
            span = feature_solution_evaluation(
                z.values, features, target, n_beta, fit_mask, span_rcond
            )
            model = fit_feature_solution(z.values, features, target, n_beta, span_rcond)
            evaluation = {
                **{key: v for key, v in span.items() if key != "fit"},
                "span_rcond": span_rcond,
                "span_rcond_scores": {f"{r:g}": c for r, c in rcond_scores.items()},
                **_beside_regression(held),
            }
            half = span["fit"]
        names = list(GROUPS) if extrapolator == "cells" else unit_feature_names()
        return {
            "dh": dh,
            "half_fit": half,
            "dh_fit": model.predict(x_probe),
            "model": model,
            "evaluation": {**evaluation, "extrapolator": extrapolator},
            "coef": dict(zip(names, model.coef.tolist(), strict=True)),
        }

    induce = solve_and_fit(targets["induce"])
    control = solve_and_fit(targets["control_random"])
    if extrapolator == "cells":
        _, codes = predict_units([], train_tokens, kinds)
        groups = token_groups(train_tokens, n_synthetic)
        train_cells = np.stack([groups[g] for g in GROUPS], axis=-1).astype(np.float64)
        induce["dh_train"] = induce["model"].predict(train_cells)
        control["dh_train"] = control["model"].predict(train_cells)
        predicted = []
    else:
        fits = [induce["model"], control["model"], *([induce["half_fit"]] if balance else [])]
        predicted, codes = predict_units(fits, train_tokens, kinds)
        induce["dh_train"], control["dh_train"] = predicted[:2]
    if balance:
        half_train = predicted[2]
        for sol in (induce, control):
            sol["dh_train"], sol["dh_fit"] = balance_positions(sol["dh_train"], sol["dh_fit"])
        _, half_probe = balance_positions(half_train, induce["half_fit"].predict(features))
        held = ~fit_mask
        induce["evaluation"]["balanced_heldout_target_cosine"] = cosine(
            n_beta * z.values[:, held] @ half_probe[held], targets["induce"]
        )
    solutions = {
        "induce": induce,
        "repress": {key: -induce[key] for key in ("dh", "dh_fit", "dh_train")},
        "control_random": control,
    }
    weights, alphas = {}, {}
    probe = {"dh": induce["dh"], "dh_fit": induce["dh_fit"]}
    for condition, sol in solutions.items():
        alphas[condition] = alpha_for_ratio(sol["dh_train"], ratio)
        rho = weights_from_intervention(sol["dh_train"], alphas[condition], "clip")
        weights[condition] = rho.astype(np.float32)
        probe[f"rho_{condition}"] = same_rule(sol["dh_fit"], sol["dh_train"], alphas[condition])
    powers = {}
    if class_neutral:
        probe_codes = features[:, :N_CLASSES].argmax(-1)
        for condition in solutions:
            weights[condition], probe[f"rho_{condition}"], powers[condition] = _neutral(
                weights[condition], codes, probe[f"rho_{condition}"], probe_codes, ratio, condition
            )
    evaluation = {
        "induce": {**induce["evaluation"], "coef": induce["coef"]},
        "control_random": control["evaluation"],
        "applied_target_cosine": {
            condition: applied_target_cosine(
                z.values, probe[f"rho_{condition}"], targets["induce"], n_beta, fit_mask
            )
            for condition in solutions
        },
    }
    weights["control_shuffled"] = shuffle_within_classes(weights["induce"], codes, seed)
    if extrapolator != "cells":  # cell weights are constant within these cells already
        cells = cell_codes(codes, n_synthetic)
        weights["control_cell_shuffled"] = shuffle_within_classes(weights["induce"], cells, seed)
    summary = {
        "mode": {
            "index": int(k),
            "head_alignment": steered["head_alignment"],
            "token_correlation": steered["token_correlation"],
            **{k: v for k, v in steered.items() if k.startswith("token_correlation_")},
            "found": bool(found["found"] and k == found["mode"]),
            "target": (
                "circuit" if target == "circuit" else "search" if target_mode is None else "given"
            ),
            "search": {"index": int(found["mode"]), "found": found["found"]},
            "sign": steered["sign"],
            "explained_variance": steered["explained_variance"],
            "induce_sign": float(s),
            "table": found["table"],
            "token_ceiling": ceiling,
        },
        "extrapolation": evaluation,
        "balance_positions": bool(balance),
        "position_profile": {c: profile_summary(position_profile(w)) for c, w in weights.items()},
        "dose": {
            "ratio_target": ratio,
            "alpha": alphas,
            "ratio": {c: decile_ratio(w) for c, w in weights.items()},
            **({"class_neutral_power": powers} if class_neutral else {}),
        },
        "class_weight": {
            c: {
                name: float(w[codes == i].mean())
                for i, name in enumerate(PRIMARY_CLASSES)
                if (codes == i).any()
            }
            for c, w in weights.items()
        },
        "predictable_share_probes": float(predictable.mean()),
        "n_beta": float(n_beta),
        "probe_units": int(units),
        "train_units": int(codes.size),
        "ridge": ridge,
        "rcond": rcond,
    }
    return NaturalWeights(weights=weights, probe=probe, summary=summary)
