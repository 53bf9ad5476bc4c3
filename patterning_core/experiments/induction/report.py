"""The induction-patterning report: when the circuit forms under baseline, Induce and
Repress weights, the verdict per seed, the induction mode and the weights, as Markdown
with plots (rendered through ``patterning_core.report``).

``runs``: results of the retraining task (``tasks.retraining.retrain_weighted``) with
``condition`` added; ``weights``: the weights' numbers (``weights.induction_weights``'s
``info`` with the files added).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from patterning_core.estimators.mode_weights import CONDITIONS
from patterning_core.experiments.induction.patterning import crossing_step
from patterning_core.report.markdown import markdown_table
from patterning_core.report.patterning_plots import plot_class_weights, plot_condition_curves


@dataclass
class PatterningReport:
    """``text``: the Markdown of ``report.md``; ``rows``: :func:`run_rows`; ``verdicts``:
    one :func:`verdict` per seed (``{"seed", "induce", "repress", "note", "interpolated"}``);
    ``pngs``: the plots written."""

    text: str
    rows: list[dict]
    verdicts: list[dict]
    pngs: list[Path]


def verdict(
    baseline: float | None, induce: float | None, repress: float | None, steps: int
) -> dict:
    """The success criteria for one seed: Induce forms at most half as late as the baseline,
    Repress at least twice as late (not forming within ``steps`` counts if steps ≥ 2×)."""
    if baseline is None:
        return {"induce": None, "repress": None, "note": "baseline did not form"}
    ok_induce = induce is not None and induce <= 0.5 * baseline
    if repress is None:
        ok_repress: bool | None = True if steps >= 2 * baseline else None
        note = f"Repress not formed by step {steps} (> {steps / baseline:.2f}× baseline)"
    else:
        ok_repress = repress >= 2 * baseline
        note = ""
    return {"induce": ok_induce, "repress": ok_repress, "note": note}


def _fmt_step(step: int | None) -> str:
    return "not formed" if step is None else str(step)


def _ratio(step: float | None, baseline: float | None, steps: int) -> str:
    if baseline is None:
        return "–"
    if step is None:
        return f"> {steps / baseline:.2f}"
    return f"{step / baseline:.2f}"


def _crossing(run: dict) -> float | None:
    return crossing_step(run["steps"], run["best"], run["threshold"])


def run_rows(runs: list[dict], steps: int) -> list[dict]:
    """One table row per run: formation step (checkpoint, and interpolated crossing), ratio
    to its seed's baseline, final scores and losses."""
    base = {r["seed"]: r for r in runs if r["condition"] == "baseline"}
    rows = []
    for r in runs:
        b = base.get(r["seed"])
        b_step = None if b is None else b["formation_step"]
        b_cross = None if b is None else _crossing(b)
        cross = _crossing(r)
        rows.append(
            {
                "seed": r["seed"],
                "condition": r["condition"],
                "formation step": _fmt_step(r["formation_step"]),
                "÷ baseline": _ratio(r["formation_step"], b_step, steps),
                "crossing (interp.)": "–" if cross is None else f"{cross:.0f}",
                "÷ baseline (interp.)": _ratio(cross, b_cross, steps),
                "final best PMS": f"{r['best'][-1]:.3f}",
                "final val loss": f"{r['final_val_loss']:.4f}",
                **{
                    f"val loss ({c})": f"{v:.3f}"
                    for c, v in sorted(r.get("final_val_loss_by_class", {}).items())
                },
            }
        )
    return rows


def seed_verdicts(runs: list[dict], steps: int) -> list[dict]:
    """:func:`verdict` per seed on the checkpoint formation steps, with the same criteria on
    the interpolated crossings under ``"interpolated"``."""
    by_seed: dict[int, dict[str, dict]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["condition"]] = r
    verdicts = []
    for seed, f in sorted(by_seed.items()):
        at = {c: f[c]["formation_step"] if c in f else None for c in ("baseline", *CONDITIONS)}
        v = verdict(at["baseline"], at["induce"], at["repress"], steps)
        cross = {c: _crossing(f[c]) if c in f else None for c in ("baseline", *CONDITIONS)}
        vi = verdict(cross["baseline"], cross["induce"], cross["repress"], steps)
        verdicts.append({"seed": seed, **v, "interpolated": vi})
    return verdicts


def _table(rows: list[dict]) -> list[str]:
    """A Markdown table followed by a blank line (nothing for no rows)."""
    return [*markdown_table(rows), ""] if rows else []


def _weights_section(info: dict, out: Path, png: Path) -> list[str]:
    s = info["summary"]
    classes = list(s["train_class_fraction"])
    rows = [
        {
            "class": c,
            "share of training units": f"{s['train_class_fraction'][c]:.1%}",
            "probe units": s["probe_counts"].get(c, 0),
            "mean dh (Induce)": f"{s['class_dh_induce'].get(c, 0.0):+.3e}",
            "ρ Induce": f"{s['conditions']['induce']['class_weights'][c]:.3f}",
            "ρ Repress": f"{s['conditions']['repress']['class_weights'][c]:.3f}",
        }
        for c in classes
    ]
    lines = ["## Weights", "", *_table(rows)]
    lines += [
        f"- α = {s['alpha']}. Rule: {s['alpha_rule']}",
        f"- Negative weights: `{s['negative']}`. Share of training units clipped (ρ < 0 "
        f"before the rule): Induce {s['conditions']['induce']['fraction_clipped']:.1%}, "
        f"Repress {s['conditions']['repress']['fraction_clipped']:.1%}; left with ρ = 0: "
        f"Induce {s['conditions']['induce']['fraction_zero']:.1%}, Repress "
        f"{s['conditions']['repress']['fraction_zero']:.1%}.",
        f"- Extrapolation from the probes by pattern class: R² = {s['fit_r2']:.4f} (share of "
        "the probe solution dh's variance that the class means explain).",
        f"- Target kept by the class-mean weights (on the probes, linear response "
        f"nβ·χ̃·dh): cosine with the exact solution's response "
        f"{s['target_retained']['cosine']:+.4f}, norm ratio "
        f"{s['target_retained']['norm_ratio']:.3f}.",
    ]
    if len(s["probe_counts"]) == 2:
        lines.append(
            "- Only two classes among the probes. dh sums to zero over the probes (χ̃ is "
            "centred per component), so n_a·m_a = −n_b·m_b: the class means are fixed by the "
            "probe counts up to one sign, and χ decides only which class goes up."
        )
    if s["classes_without_probes"]:
        lines.append(f"- Classes without probe units (dh = 0): {s['classes_without_probes']}.")
    per_chain = info.get("per_chain_class_dh") or {}
    if per_chain:
        parts = []
        for c, values in per_chain.items():
            pooled = s["class_dh_induce"].get(c, 0.0)
            agree = sum((v > 0) == (pooled > 0) for v in values)
            parts.append(
                f"`{c}` {', '.join(f'{v:+.2e}' for v in values)} "
                f"({agree}/{len(values)} chains share the pooled sign)"
            )
        lines.append(
            "- Class means of dh from each SGLD chain's χ alone (same target): "
            + "; ".join(parts)
            + "."
        )
    lines += ["", f"![class weights]({os.path.relpath(png, out)})", ""]
    return lines


def _mode_section(info: dict) -> list[str]:
    s = info["summary"]
    scores = s["head_scores"]
    lines = [
        "## Induction mode",
        "",
        f"Head scores: prefix-matching scores at step {info['scores_from']['step']} of "
        f"`{info['scores_from']['run_dir']}`: "
        + ", ".join(f"{h} {v:.3f}" for h, v in scores.items())
        + ".",
        "",
        "Per checkpoint of the χ store, the mode whose component loadings align best "
        "(|cosine| with the centred head scores, `decomposition.aligned_mode`):",
        "",
    ]
    lines += _table(
        [
            {
                "checkpoint": a["step"],
                "induction mode": f"PC{a['mode']}",
                "alignment": f"{a['alignment']:+.3f}",
                "explained variance": f"{a['explained_variance']:.2%}",
            }
            for a in info["alignment_by_checkpoint"]
        ]
    )
    align = ", ".join(f"PC{m} {a:+.2f}" for m, a in list(s["alignments"].items())[:8])
    target = ", ".join(f"{c} {v:+.2f}" for c, v in s["target_induce"].items())
    lines += [
        f"Used: χ at step {info['chi_step']} (nβ = {s['n_beta']}), induction mode "
        f"**PC{s['mode']}** (alignment {s['alignment']:+.3f}, explained variance "
        f"{s['explained_variance'][s['mode'] - 1]:.2%}); all modes: {align}.",
        "",
        f"Sign rule: {s['sign_rule']} Here s = {s['sign_induce']:+.0f}; score-weighted change "
        f"Σ(score − mean)·dμ: Induce {s['conditions']['induce']['score_weighted_change']:+.3f}, "
        f"Repress {s['conditions']['repress']['score_weighted_change']:+.3f}.",
        "",
        f"Induce target dμ (standardized units): {target}. Solved on the per-component "
        f"standardized χ with {s['kept_modes']} singular values kept (rcond {s['rcond']}).",
        "",
    ]
    if info.get("reference_matches_store") is False:
        lines += [
            "**Warning**: the reference run's checkpoint at this step is not the one χ was "
            "computed from (digest differs).",
            "",
        ]
    return lines


def _results_section(
    runs: list[dict], steps: int, threshold: float, verdicts: list[dict], pngs: list[Path], out
) -> list[str]:
    lines = [
        "## Formation of the induction circuit",
        "",
        f"Formation step: the first checkpoint at which the best layer-1 head's prefix-matching "
        f"score reaches {threshold} (`induction.FORMATION_THRESHOLD`); checkpoints every "
        f"{_spacing(runs)} steps, so formation steps are resolved to that; the interpolated "
        "crossing is where the straight line between the two checkpoints around the first "
        "crossing meets the threshold. The criteria below use the checkpoint steps. Final "
        "validation loss: unweighted mean per-token loss on 256 held-out sequences at the "
        "last step.",
        "",
    ]
    lines += _table(run_rows(runs, steps))
    for v in verdicts:
        vi = v["interpolated"]
        lines.append(
            f"- seed {v['seed']}: Induce ≤ ½ × baseline: {_yes(v['induce'])} (interpolated: "
            f"{_yes(vi['induce'])}); Repress ≥ 2 × baseline (or not formed): "
            f"{_yes(v['repress'])} (interpolated: {_yes(vi['repress'])}). {v['note']}".rstrip()
        )
    lines += [""] + [f"![{p.stem}]({os.path.relpath(p, out)})" for p in pngs] + [""]
    return lines


def _spacing(runs: list[dict]) -> int:
    steps = runs[0]["steps"] if runs else [0, 0]
    return int(min(b - a for a, b in itertools.pairwise(steps))) if len(steps) > 1 else 0


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "undetermined"}[value]


def patterning_report(
    out_dir: str | os.PathLike[str], settings: dict, weights: dict, runs: list[dict]
) -> PatterningReport:
    """Draw the plots into ``out_dir`` (formation and validation-loss curves per condition,
    class weights) and return the report's Markdown (links relative to ``out_dir``), its
    run table and the verdicts. ``settings["train"]["steps"]``: the runs' length."""
    out = Path(out_dir)
    steps = int(settings["train"]["steps"])
    threshold = runs[0]["threshold"]
    pms = plot_condition_curves(
        runs,
        out / "prefix_matching_conditions.png",
        threshold=threshold,
        chance=runs[0]["chance"],
        title="induction formation: baseline vs Induce vs Repress",
    )
    val = plot_condition_curves(
        runs,
        out / "val_loss_conditions.png",
        x="val_steps",
        y="val_loss",
        ylabel="validation loss (unweighted, nats/token)",
        title="validation loss",
    )
    s = weights["summary"]
    cw = plot_class_weights(
        {c: s["conditions"][c]["class_weights"] for c in CONDITIONS},
        s["train_class_fraction"],
        out / "class_weights.png",
    )
    verdicts = seed_verdicts(runs, steps)
    lines = ["# Patterning the induction circuit: Induce and Repress", ""]
    lines += _results_section(runs, steps, threshold, verdicts, [pms, val], out)
    lines += _mode_section(weights) + _weights_section(weights, out, cw)
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```"]
    lines += ["", "## Runs", ""] + [f"- {r['label']}: `{r['run_dir']}`" for r in runs] + [""]
    return PatterningReport(
        text="\n".join(lines), rows=run_rows(runs, steps), verdicts=verdicts, pngs=[pms, val, cw]
    )
