"""The natural-text induction demonstration's numbers (``summarize_induce``: what
``results.json`` holds, with every target met or missed per seed) and its report
(``induce_report``: Markdown and figures, pyplot through ``patterning_core.report``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patterning_core.experiments.induction.metrics import FORMATION_THRESHOLD
from patterning_core.report.markdown import markdown_table
from patterning_core.report.patterning_plots import plot_condition_curves
from patterning_core.report.plots import plot_head_scores

__all__ = ["TARGETS", "induce_report", "summarize_induce"]

CONDITIONS = (
    "baseline",
    "induce",
    "repress",
    "control_random",
    "control_shuffled",
    "control_cell_shuffled",
)
TARGETS = {
    "induce_max_ratio": 0.5,  # Induce forms at most at 0.5× the baseline step
    "repress_min_ratio": 2.0,  # Repress at least 2× (or not within the run)
    "control_range": (0.8, 1.25),  # a control within this range of the baseline step
    "induce_max_loss_cost": 0.1,  # nats of unweighted held-out loss
    "mode_min_alignment": 0.8,
    "mode_min_token_correlation": 0.3,
    "mode_min_seed_agreement": 0.8,
    "mode_min_chain_signs": 7,  # of 8
    "heldout_target_cosine": 0.5,
}


def _ratio(step: int | None, baseline: int | None) -> float | None:
    if step is None or not baseline:
        return None
    return step / baseline


def seed_targets(runs: Sequence[Mapping[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Per seed: each condition's formation step over the baseline's and whether it meets its
    target (``TARGETS``); a run that never forms counts as ``steps`` + (beyond the run) for
    Repress and as a miss for the others."""
    by = {(r["seed"], r["condition"]): r for r in runs}
    out = []
    for seed in sorted({r["seed"] for r in runs}):
        base = by.get((seed, "baseline"))
        if base is None:
            continue
        b = base["formation_step"]
        row: dict[str, Any] = {"seed": seed, "baseline_step": b}
        for condition in CONDITIONS[1:]:
            run = by.get((seed, condition))
            if run is None:
                continue
            ratio = _ratio(run["formation_step"], b)
            row[f"{condition}_ratio"] = ratio
            if b is None:
                met = None  # no baseline formation step: nothing to compare with
            elif condition == "induce":
                met = ratio is not None and ratio <= TARGETS["induce_max_ratio"]
            elif condition == "repress":
                met = run["formation_step"] is None or ratio >= TARGETS["repress_min_ratio"]
            else:
                lo, hi = TARGETS["control_range"]
                met = ratio is not None and lo <= ratio <= hi
            row[f"{condition}_met"] = met
        induce = by.get((seed, "induce"))
        if induce is not None and None not in (induce["heldout_loss"], base["heldout_loss"]):
            cost = induce["heldout_loss"] - base["heldout_loss"]
            row["induce_loss_cost"] = cost
            row["induce_loss_met"] = cost <= TARGETS["induce_max_loss_cost"]
        out.append(row)
    return out


def best_after(
    steps: Sequence[int], best: Sequence[float], start: int, offsets: Sequence[int]
) -> dict[str, float | None]:
    """The best layer-1 prefix-matching score ``offset`` steps after ``start`` (the step the
    weights start to apply), for each offset (keys ``"+<offset>"``; None where the run has no
    checkpoint there). With weights applied from a checkpoint the runs agree up to it, so how
    far each has built the circuit some steps later is the comparison that remains when the
    baseline's formation step is already close."""
    at = dict(zip(steps, best, strict=True))
    return {f"+{o}": (float(at[start + o]) if start + o in at else None) for o in offsets}


AFTER_WEIGHTS_OFFSETS = (250, 500, 1000, 2000)


def summarize_induce(
    settings: Mapping[str, Any],
    reference: Mapping[str, Any],
    weights: Mapping[str, Any],
    reproducibility: Mapping[str, Any],
    convergence: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    loop: Mapping[str, Any],
    wall_seconds: float,
    linear_check: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``results.json`` in the issue's form (``synthetic_share``, ``steps``, ``runs``,
    ``mode``, ``extrapolation``, ``dose``, ``layer1_induction_heads``, ``layer1_heads``) plus
    the reference's head scores over training, the convergence check, the two-run χ's
    linear check (``linear_check``: rows of ``two_run_linear_check``), the per-seed targets
    and the settings."""
    w = weights["summary"]
    induce_eval = w["extrapolation"]["induce"]
    steps = int(settings["train"]["steps"])
    return {
        "synthetic_share": float(settings["data"].get("in_context_bigrams", 0.0)),
        "steps": steps,
        "runs": [
            {
                "seed": r["seed"],
                "condition": r["condition"],
                "formation_step": r["formation_step"],
                "heldout_loss": r["heldout_loss"],
                "final_best_pms": r["final_best_pms"],
                "run_dir": r.get("run_dir"),
                "curve": {"steps": r["steps"], "best": r["best"]},
                "best_pms_after_weights": best_after(
                    r["steps"],
                    r["best"],
                    int(settings.get("weights_from_step", 0)),
                    AFTER_WEIGHTS_OFFSETS,
                ),
            }
            for r in runs
        ],
        "mode": {
            "checkpoint": int(settings["weights_step"]),
            "index": w["mode"]["index"],
            "head_alignment": w["mode"]["head_alignment"],
            "token_correlation": w["mode"]["token_correlation"],
            "seed_agreement": reproducibility.get("seed_agreement"),
            "chain_sign_agreement": reproducibility.get("chain_sign_agreement"),
            "chains": reproducibility.get("chains"),
            "found": w["mode"]["found"],
            "target": w["mode"].get("target", "search"),
            "search": w["mode"].get("search"),
            "explained_variance": w["mode"]["explained_variance"],
            "table": w["mode"]["table"],
            "token_ceiling": w["mode"].get("token_ceiling"),
            "replica": reproducibility.get("replica"),
        },
        "extrapolation": {
            "heldout_r2": induce_eval["heldout_r2"],
            "heldout_target_cosine": induce_eval["heldout_target_cosine"],
            "exact_target_cosine": induce_eval["exact_target_cosine"],
            "fit_r2": induce_eval["fit_r2"],
            "coef": induce_eval.get("coef"),
            "extrapolator": induce_eval.get("extrapolator", "regression"),
            "fit_target_cosine": induce_eval.get("fit_target_cosine"),
            "target_cosine": induce_eval.get("target_cosine"),
            "regression": induce_eval.get("regression"),
            "span_rcond": induce_eval.get("span_rcond"),
            "span_rcond_scores": induce_eval.get("span_rcond_scores"),
            "control_random": w["extrapolation"].get("control_random"),
            "applied_target_cosine": w["extrapolation"].get("applied_target_cosine"),
        },
        "dose": {
            **{f"{c}_ratio": v for c, v in w["dose"]["ratio"].items()},
            "alpha": w["dose"]["alpha"],
            "class_weight": w["class_weight"],
            "class_neutral_power": w["dose"].get("class_neutral_power"),
        },
        "layer1_induction_heads": reference["layer1_induction_heads"],
        "layer1_heads": reference["layer1_heads"],
        "reference": dict(reference),
        "convergence": dict(convergence),
        "loop": dict(loop),
        "linear_check": dict(linear_check or {}),
        "targets": seed_targets(runs, steps),
        "target_values": TARGETS,
        "settings": dict(settings),
        "wall_seconds": round(wall_seconds, 1),
    }


def _applied_line(applied: Mapping[str, Mapping[str, float]] | None) -> str:
    """The sentence with each condition's applied target cosine (``natural_weights.
    applied_target_cosine``; empty for results written before it existed)."""
    if not applied:
        return ""
    return (
        " The response the applied probe weights predict, nβ·χ̃·(ρ/ρ̄ − 1), against Induce's "
        "target (cosine; all probes / fitted half / held-out half): "
        + "; ".join(
            f"{c} {_fmt(v['all'], '+.2f')} / {_fmt(v['fit_half'], '+.2f')} / "
            f"{_fmt(v['heldout_half'], '+.2f')}"
            for c, v in applied.items()
        )
        + "."
    )


def _class_neutral_line(powers: Mapping[str, float] | None) -> str:
    """The sentence saying the weights are class-neutral, with each condition's power
    (empty when they are not)."""
    if not powers:
        return ""
    return (
        " Class-neutral weights: every pattern class keeps mean weight 1 (so the class "
        "shuffle re-weights no class), the dose reached by raising each condition's weights "
        "to a power before dividing by the class mean ("
        + ", ".join(f"{c} {p:.2f}" for c, p in powers.items())
        + ")."
    )


def _extrapolator_lines(ex: Mapping[str, Any]) -> list[str]:
    """What the extrapolator was: the regression of dh on the features, or the patterning
    equation solved in the features' span (then the regression's numbers beside it)."""
    if ex.get("extrapolator", "regression") == "regression":
        return ["Extrapolator: ridge regression of the probes' exact dh on the unit features.", ""]
    reg = ex.get("regression") or {}
    if ex["extrapolator"] == "cells":
        coef = ex.get("coef") or {}
        return [
            "Extrapolator: the patterning equation solved in the span of four cells, sequence "
            "kind × predictable by copying (`cell_weights`: one weight per cell, set by the sum "
            "of its probe units' χ). On the fitted half its response reaches cosine "
            f"{_fmt(ex.get('fit_target_cosine'))} with the target, on all probes "
            f"{_fmt(ex.get('target_cosine'))}. Cell coefficients (standardized): "
            + ", ".join(f"{k.replace('_', ' ')} {v:+.3g}" for k, v in coef.items())
            + ". The regression of dh on the unit features would keep R² "
            f"{_fmt(reg.get('heldout_r2'))} and target cosine "
            f"{_fmt(reg.get('heldout_target_cosine'))} on the held-out probes.",
            "",
        ]
    return [
        "Extrapolator: the patterning equation solved in the span of the unit features "
        "(weights that the features can express, chosen for their response; no R² to dh). "
        f"On the fitted half its response reaches cosine {_fmt(ex.get('fit_target_cosine'))} "
        "with the target (truncated at rcond "
        f"{_fmt(ex.get('span_rcond'), 'g')}, chosen by cross-validation over the fitted "
        "half's probe sequences). The regression of dh on the same features would keep R² "
        f"{_fmt(reg.get('heldout_r2'))} and target cosine "
        f"{_fmt(reg.get('heldout_target_cosine'))} on the held-out probes.",
        "",
    ]


def _target_lines(mode: Mapping[str, Any]) -> list[str]:
    """A line saying that the steered mode was given by the parameters, or that the target
    was the circuit itself, when either was."""
    if mode.get("target") == "circuit":
        search = mode.get("search") or {}
        return [
            "",
            "The target is the circuit itself (`target: circuit`: dμ = −(s − mean s) over the "
            "heads, s the later circuit scores), not a mode; the mode search above is "
            f"reported for reference (best candidate mode {_fmt(search.get('index'))}, found: "
            f"{_fmt(search.get('found'))}).",
        ]
    if mode.get("target", "search") != "given":
        return []
    search = mode.get("search") or {}
    return [
        "",
        f"The steered mode, {mode['index']}, was given by the parameters (`target_mode`), "
        "not picked by the mode search, whose best candidate is mode "
        f"{_fmt(search.get('index'))} (found: {_fmt(search.get('found'))}).",
    ]


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return format(x, spec) if isinstance(x, float) else str(x)


def _with_se(value: float | None, se: float | None) -> str:
    """``value ± se`` to four decimals; ``—`` without a value."""
    if value is None:
        return "—"
    return f"{value:.4f} ± {se:.4f}" if se is not None else f"{value:.4f}"


def induce_report(out: Path, numbers: Mapping[str, Any]) -> str:
    """Markdown of ``numbers`` (``summarize_induce``) with a figure of every run's best
    layer-1 prefix-matching score over training, written beside it."""
    out = Path(out)
    curves = [
        {**r["curve"], "seed": r["seed"], "condition": r["condition"]} for r in numbers["runs"]
    ]
    if curves:
        plot_condition_curves(
            curves,
            out / "formation.png",
            threshold=FORMATION_THRESHOLD,
            title="best layer-1 prefix matching, per condition and seed",
        )
    ref = numbers["reference"]
    mode = numbers["mode"]
    ex = numbers["extrapolation"]
    head_lines = _heads_over_training(out, ref, numbers["settings"].get("chi_checkpoints", []))
    lines = [
        "# χ steers the induction circuit of a model trained on natural text",
        "",
        f"Training data: the offline corpus with {numbers['synthetic_share']:.0%} synthetic "
        f"in-context-bigram sequences; {numbers['steps']} steps. The reference (seed "
        f"{numbers['settings']['seeds'][0]}, uniform weights) forms the circuit at step "
        f"{_fmt(ref['formation_step'])}; {ref['layer1_induction_heads']} of "
        f"{ref['layer1_heads']} layer-1 heads end with prefix matching ≥ "
        f"{FORMATION_THRESHOLD}.",
        "",
        f"Written by the `induce` flow, run as `{numbers.get('command', '—')}`.",
        "",
        "## Reference heads at the last checkpoint",
        "",
        *markdown_table(
            [
                {"head": h, "prefix matching": _fmt(p), "previous token": _fmt(q)}
                for h, p, q in ref["final_heads"]
            ],
            align=["l", "r", "r"],
        ),
        "",
        *head_lines,
        "## The induction mode",
        "",
        f"χ at step {mode['checkpoint']}: mode {mode['index']} (found: "
        f"{_fmt(mode['found'])}), head alignment {_fmt(mode['head_alignment'])}, token "
        f"correlation {_fmt(mode['token_correlation'])}, explained variance "
        f"{_fmt(mode['explained_variance'], '.2%')}; with a second SGLD seed |cos| "
        f"{_fmt(mode['seed_agreement'])}; its sign holds in {_fmt(mode['chain_sign_agreement'])}"
        f" of {_fmt(mode['chains'])} chains.",
        *_target_lines(mode),
        "",
        f"χ read with the {numbers['settings'].get('chi_estimator', 'two-run')} estimator "
        "(two-run: the store's, centred by the full run; restricted: each restricted run's "
        "own −Cov_C[φ, ℓ_z − L]) by the mode search, the weights and the loop's prediction.",
        *_ceiling_lines(mode.get("token_ceiling")),
        "",
        *markdown_table(
            [
                {
                    "mode": row["mode"],
                    "explained variance": _fmt(row["explained_variance"], ".2%"),
                    "head alignment": _fmt(row["head_alignment"]),
                    "token correlation": _fmt(row["token_correlation"]),
                    **{
                        f"token correlation, {key.removeprefix('token_correlation_')} probes": (
                            _fmt(value)
                        )
                        for key, value in row.items()
                        if key.startswith("token_correlation_")
                    },
                }
                for row in mode["table"]
            ],
            align=["r"]
            * (4 + sum(k.startswith("token_correlation_") for k in (mode["table"] or [{}])[0])),
        ),
        "",
        "## Weights for every training token",
        "",
        *_extrapolator_lines(ex),
        f"Held-out probes (half of the probe sequences): R² {_fmt(ex['heldout_r2'])}, target "
        f"cosine {_fmt(ex['heldout_target_cosine'])} (the exact held-out solution: "
        f"{_fmt(ex['exact_target_cosine'])}). Decile weight ratios: "
        + ", ".join(
            f"{k.removesuffix('_ratio')} {_fmt(v, '.2f')}"
            for k, v in numbers["dose"].items()
            if k.endswith("_ratio")
        )
        + "."
        + _class_neutral_line(numbers["dose"].get("class_neutral_power"))
        + _applied_line(ex.get("applied_target_cosine")),
        "",
        "## Retraining",
        "",
        *(
            _retraining_lines(numbers["runs"], int(numbers["settings"].get("weights_from_step", 0)))
            if numbers["runs"]
            else _no_retraining(mode)
        ),
        "",
        "## χ measured again on the retrained models",
        "",
        "Shift of every component's localized loss ⟨φ_C⟩ at the weights step against the "
        "seed's baseline run, compared with the first-order prediction nβ·χ·dh from the "
        "reference's χ and the condition's probe weights (cosine over components, the "
        "heads whose sign agrees, and the gain: measured over predicted, least squares). "
        "Every condition is also read along Induce's predicted shift (its unit vector over "
        "the components): Induce should move along it, Repress against it, and the controls, "
        "at the same dose, less than either.",
        "",
        *(
            markdown_table(
                [
                    {
                        "seed": seed,
                        "condition": condition,
                        "cosine": _fmt(row.get("cosine")),
                        "head signs agree": f"{row['head_signs_agree']} of {row['heads']}"
                        if "heads" in row
                        else "—",
                        "gain": _fmt(row.get("gain"), ".3g"),
                        "along Induce's prediction: measured": _with_se(
                            row.get("along_induce"), row.get("along_induce_se")
                        ),
                        "predicted": _fmt(row.get("predicted_along_induce"), ".4f"),
                    }
                    for seed, rows in numbers["loop"].items()
                    for condition, row in rows.items()
                ],
                align=["r", "l", "r", "r", "r", "r", "r"],
            )
            or ["None: no model was retrained."]
        ),
        "",
        "## Linear response of the two-run χ",
        "",
        *_linear_check_lines(numbers.get("linear_check") or {}),
        "",
        "## χ convergence at the weights step",
        "",
        *_convergence_lines(numbers["convergence"]),
        "",
        "## Targets per seed",
        "",
        *(
            markdown_table(
                [{k: _fmt(v, ".2f") for k, v in row.items()} for row in numbers["targets"]]
            )
            or ["None: no model was retrained."]
        ),
        "",
        f"Wall time of this run: {numbers['wall_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _heads_over_training(out: Path, ref: Mapping[str, Any], chi_steps: Sequence[int]) -> list[str]:
    """Figures of every layer-1 head's prefix matching and every layer-0 head's
    previous-token score over the reference's checkpoints (written into ``out``), the χ
    checkpoints marked."""
    pms, prev, steps = ref.get("pms_per_head"), ref.get("prev_per_head"), ref.get("steps")
    if not (pms and prev and steps):
        return []
    heads = len(pms[0][0])
    figures = [  # (scores, layer, file, score name, threshold)
        (pms, 1, "reference_prefix_matching.png", "prefix matching", FORMATION_THRESHOLD),
        (prev, 0, "reference_previous_token.png", "previous-token score", None),
    ]
    for scores, layer, name, label, threshold in figures:
        plot_head_scores(
            steps,
            {f"L{layer}H{h}": [s[layer][h] for s in scores] for h in range(heads)},
            out / name,
            label,
            f"reference: layer-{layer} heads' {label}",
            threshold=threshold,
            marks=chi_steps,
        )
    return [
        "## The reference's heads over training",
        "",
        "Every checkpoint's scores are in `results.json` (`reference.pms_per_head`, "
        "`reference.prev_per_head`: checkpoint × layer × head).",
        "",
        "![prefix matching](reference_prefix_matching.png)",
        "",
        "![previous token](reference_previous_token.png)",
        "",
    ]


def _retraining_lines(runs: Sequence[Mapping[str, Any]], weights_from: int = 0) -> list[str]:
    after = [
        key
        for key in (f"+{o}" for o in AFTER_WEIGHTS_OFFSETS)
        if any((r.get("best_pms_after_weights") or {}).get(key) is not None for r in runs)
    ]
    start = (
        [
            f"The weighted runs train unweighted up to step {weights_from} (the baseline's run "
            "until then) and with their weights from it on; the columns +k give the best "
            f"layer-1 prefix matching k steps after step {weights_from}.",
            "",
        ]
        if weights_from
        else []
    )
    return [
        "![formation](formation.png)",
        "",
        *start,
        *markdown_table(
            [
                {
                    "seed": r["seed"],
                    "condition": r["condition"],
                    "formation step": _fmt(r["formation_step"]),
                    "held-out loss": _fmt(r["heldout_loss"]),
                    "final best PMS": _fmt(r["final_best_pms"]),
                    **{
                        key: _fmt((r.get("best_pms_after_weights") or {}).get(key))
                        for key in (after if weights_from else [])
                    },
                }
                for r in runs
            ],
            align=["r", "l", "r", "r", "r", *(["r"] * len(after) if weights_from else [])],
        ),
    ]


def _no_retraining(mode: Mapping[str, Any]) -> list[str]:
    return [
        "None: the mode search found no induction mode (thresholds: head alignment ≥ 0.8, "
        f"token correlation ≥ 0.3; best candidate mode {mode['index']}: "
        f"{_fmt(mode['head_alignment'])} and {_fmt(mode['token_correlation'])}), so there "
        "are no χ weights to test (``retrain_without_mode`` retrains all the same).",
    ]


def _linear_check_lines(check: Mapping[str, Any]) -> list[str]:
    """Predicted (two-run χ; the restricted run's own χ) against measured change of the
    checked heads' localized losses at small doses of the Induce weights."""
    if not check.get("rows"):
        return ["Not run (``linear_check`` was off)."]
    return [
        f"At the weights step, on {check['n_seqs']} training sequences (every token a unit) "
        "re-weighted by ρ = 1 + f·(ρ_Induce − 1): the change of each head's localized loss "
        "⟨φ_C⟩ measured by re-sampling its restricted run (common random numbers) against "
        "nβ·χ·dh with the two-run χ that patterning inverts, and with the restricted run's "
        "own χ (−Cov_C[φ, ℓ_z − L], the exact first-order response of that run's mean). "
        "± one standard error over chains.",
        "",
        *markdown_table(
            [
                {
                    "head": r["component"],
                    "f": _fmt(r["fraction"], "g"),
                    "measured": f"{r['measured']:+.2e} ± {r['measured_se']:.1e}",
                    "two-run prediction": f"{r['predicted']:+.2e} ± {r['predicted_se']:.1e}",
                    "measured / two-run": _fmt(r["ratio"], "+.2f"),
                    "restricted prediction": f"{r['predicted_restricted']:+.2e} ± "
                    f"{r['predicted_restricted_se']:.1e}",
                    "measured / restricted": _fmt(r["ratio_restricted"], "+.2f"),
                }
                for r in check["rows"]
            ],
            align=["l", "r", "r", "r", "r", "r", "r"],
        ),
    ]


def _convergence_lines(convergence: Mapping[str, Any]) -> list[str]:
    """The variants' bias against the seed noise (on χ as stored and beyond PC1), the
    reliability of χ beyond PC1 between two seeds, and the φ traces' autocorrelation."""
    if not convergence.get("variants"):
        lines = ["No variants (twice the draws, a burn-in) were run: ``convergence`` was off."]
    else:
        lines = _variant_lines(convergence["variants"])
    structure = convergence.get("structure")
    if structure:
        lines += [
            "",
            "Reliability beyond PC1 (two SGLD seeds, per component the correlation of the "
            "standardized χ once each seed's PC1 is removed; 0 = noise, 1 = no noise): "
            f"median {_fmt(structure['median'], '.2f')}, range "
            f"{min(structure['per_component']):.2f}–{max(structure['per_component']):.2f}.",
        ]
    tau = convergence.get("autocorrelation_time")
    if tau:
        lines += [
            "",
            f"Integrated autocorrelation time of the φ traces: {tau['median_draws']:.1f} draws "
            f"(median over components and chains): {tau['effective_draws']:.0f} effective "
            "draws per component.",
        ]
    return lines


def _variant_lines(variants: Mapping[str, Any]) -> list[str]:
    """Each variant's bias against the seed noise, on χ as stored and beyond PC1."""
    return [
        "Each variant's bias² over one estimate's seed noise (agrees: ≤ 1; "
        "``estimators.convergence``), on χ as stored (dominated by PC1) and on the "
        "standardized χ beyond PC1, where the induction mode is.",
        "",
        *markdown_table(
            [
                {
                    "variant": name,
                    "bias²/noise² (χ)": _fmt(v["raw"]["bias_over_noise"], ".2f"),
                    "relative noise (χ)": _fmt(v["raw"]["relative_noise"], ".2f"),
                    "bias²/noise² (beyond PC1)": _fmt(v["beyond_pc1"]["bias_over_noise"], ".2f"),
                    "relative noise (beyond PC1)": _fmt(v["beyond_pc1"]["relative_noise"], ".2f"),
                }
                for name, v in variants.items()
            ],
            align=["l", "r", "r", "r", "r"],
        ),
    ]


def _ceiling_lines(ceiling: dict | None) -> list[str]:
    """The token ceiling (``mode_search.token_ceiling``) in one sentence, if computed."""
    if not ceiling:
        return []
    return [
        "",
        "Token ceiling: the best combination of χ's rows, fitted on half of the probe "
        "sequences, correlates with the predictable tokens at r = "
        f"{_fmt(ceiling['heldout_r'])} on the other half (folds "
        + ", ".join(_fmt(f) for f in ceiling["folds"])
        + f"; in sample {_fmt(ceiling['in_sample_r'])}). No mode can exceed it, so below "
        "0.3 the token test cannot pass at this checkpoint whichever mode is chosen.",
    ]
