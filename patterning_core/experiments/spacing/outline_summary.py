"""Every seed's outline-fin readings in one table: each retrained model against its own
seed's baseline, each χ-derived weighting against its same-share control at the same dose,
and the experiment's targets (χ-suppress halves the metric, its control moves it by less than
a quarter) checked on every seed.

Input: reading rows of ``scripts/fin_outline_suppress.py read`` (``outline_reading`` plus
``label``), each tagged with the seed, the condition (``outline_reading.CONDITIONS``) and the
dose α of its weights (``None`` for the unweighted baseline and the data edit). The fin
metric is the mean over a model's 4-chain sets (``metric_4``); a lower metric is a smaller
fin. A change or a gap counts only where it exceeds ``resolution`` (the spread of the metric
between two 4-chain sets of one model and between two SGLD estimates of one model, about
0.15 on this substrate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CONTROL_OF",
    "outline_summary",
    "plot_outline_summary",
    "summary_columns",
    "summary_report",
]

# Each χ-derived weighting and the control that moves whitespace's share by as much.
CONTROL_OF = {"chi_suppress": "control_dose", "chi_amplify": "control_amplify"}


def _run(entry: dict) -> dict:
    row = entry["reading"]
    return {
        "seed": int(entry["seed"]),
        "condition": entry["condition"],
        "alpha": entry.get("alpha"),
        "label": row["label"],
        "fin_metric": row["metric_4"][0],
        "fin_metric_sd": row["metric_4"][1],
        "fin_metric_loss_controlled": row["partial_4"][0],
        "found_again": row["found_again_4"][0],
        "loss_whitespace": row["counting"]["space_all"],
        "loss_marker": row["marker_loss"],
        "loss_spaces_after_3_plus": row["space_loss_after_3_plus"],
    }


def outline_summary(entries: Sequence[dict], resolution: float = 0.15) -> dict:
    """``entries``: ``{"seed", "condition", "alpha", "reading"}`` (one per model; one
    ``baseline`` per seed at most). Returns ``{"resolution", "fin_metric_reference",
    "runs", "pairs", "targets"}``:

    - ``runs``: one per model (``_run`` keys), with ``change`` = its fin metric minus its
      seed's baseline and ``relative_change`` = change / baseline (``None`` without one);
    - ``pairs``: per (seed, α) with a χ weighting and its control, ``gap`` = control's metric
      minus the χ weighting's (positive: χ lower) and ``resolved`` = |gap| > resolution
      (either sign);
    - ``targets``: per (χ condition, α), over the seeds that have both models and a baseline:
      ``chi_halves_every_seed`` (relative change ≤ −0.5 on each), ``control_within_quarter``
      (|relative change| < 0.25 on each), ``chi_below_control_resolved`` (how many seeds
      have gap > resolution),
      ``seeds``; and over every seed with both models (``paired_seeds``, a baseline not
      needed): ``chi_below_control`` (how many seeds have a positive gap, resolved or not),
      ``gap_mean`` and ``gap_sd`` (sample sd over seeds; ``None`` for one seed).
    ``fin_metric_reference``: seed 0's baseline metric (``None`` without one)."""
    runs = [_run(e) for e in entries]
    baselines: dict[int, float] = {}
    for run in runs:
        if run["condition"] == "baseline":
            if run["seed"] in baselines:
                raise ValueError(f"seed {run['seed']} has two baselines; keep one.")
            baselines[run["seed"]] = run["fin_metric"]
    for run in runs:
        base = baselines.get(run["seed"])
        if base is None or run["condition"] == "baseline":
            run["change"] = run["relative_change"] = None
        else:
            run["change"] = run["fin_metric"] - base
            run["relative_change"] = run["change"] / base
    by_key = {(r["seed"], r["condition"], r["alpha"]): r for r in runs}
    pairs, targets = [], []
    for chi_condition, control in CONTROL_OF.items():
        alphas = sorted({r["alpha"] for r in runs if r["condition"] == chi_condition})
        for alpha in alphas:
            seeds = sorted(
                r["seed"]
                for r in runs
                if r["condition"] == chi_condition
                and r["alpha"] == alpha
                and (r["seed"], control, alpha) in by_key
            )
            gaps = []
            for seed in seeds:
                chi, ctl = by_key[(seed, chi_condition, alpha)], by_key[(seed, control, alpha)]
                gap = ctl["fin_metric"] - chi["fin_metric"]
                gaps.append(gap)
                pairs.append(
                    {
                        "seed": seed,
                        "condition": chi_condition,
                        "control": control,
                        "alpha": alpha,
                        "gap": gap,
                        "resolved": abs(gap) > resolution,
                    }
                )
            judged = [s for s in seeds if s in baselines]
            if not judged:
                continue
            gaps = np.array(gaps)
            chi_rel = [by_key[(s, chi_condition, alpha)]["relative_change"] for s in judged]
            ctl_rel = [by_key[(s, control, alpha)]["relative_change"] for s in judged]
            resolved = sum(g > resolution for s, g in zip(seeds, gaps, strict=True) if s in judged)
            targets.append(
                {
                    "condition": chi_condition,
                    "alpha": alpha,
                    "seeds": judged,
                    "chi_halves_every_seed": all(r <= -0.5 for r in chi_rel),
                    "control_within_quarter": all(abs(r) < 0.25 for r in ctl_rel),
                    "chi_below_control_resolved": int(resolved),
                    "paired_seeds": seeds,
                    "chi_below_control": int((gaps > 0).sum()),
                    "gap_mean": float(gaps.mean()),
                    "gap_sd": float(gaps.std(ddof=1)) if len(gaps) > 1 else None,
                }
            )
    return {
        "resolution": resolution,
        "fin_metric_reference": baselines.get(0),
        "runs": runs,
        "pairs": pairs,
        "targets": targets,
    }


def summary_report(summary: dict) -> str:
    """Markdown: the runs table (seed, condition, α, fin metric ± sd over 4-chain sets, its
    change against the seed's baseline, loss-controlled metric, found again, losses), the
    χ-against-control gaps, and the targets."""
    from patterning_core.report.markdown import markdown_table

    def or_dash(value, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    runs = sorted(summary["runs"], key=lambda r: (r["seed"], r["condition"], r["alpha"] or 0))
    run_rows = [
        {
            "seed": r["seed"],
            "condition": r["condition"],
            "α": or_dash(r["alpha"], "g"),
            "fin metric": f"{r['fin_metric']:.2f} ± {r['fin_metric_sd']:.2f}",
            "change": "—"
            if r["change"] is None
            else f"{r['change']:+.2f} ({100 * r['relative_change']:+.0f} %)",
            "loss-controlled": f"{r['fin_metric_loss_controlled']:.2f}",
            "found again": f"{r['found_again']:.2f}",
            "loss: spaces": f"{r['loss_whitespace']:.3f}",
            "markers": f"{r['loss_marker']:.3f}",
            "spaces after 3+": f"{r['loss_spaces_after_3_plus']:.3f}",
        }
        for r in runs
    ]
    pair_rows = [
        {
            "seed": p["seed"],
            "condition": p["condition"],
            "α": f"{p['alpha']:g}",
            "gap": f"{p['gap']:+.3f}",
            "resolved": yes(p["resolved"]),
        }
        for p in summary["pairs"]
    ]
    target_rows = [
        {
            "condition": t["condition"],
            "α": f"{t['alpha']:g}",
            "seeds": ", ".join(map(str, t["seeds"])),
            "χ halves the metric on every seed": yes(t["chi_halves_every_seed"]),
            "control within a quarter on every seed": yes(t["control_within_quarter"]),
            "χ below control, resolved": f"{t['chi_below_control_resolved']} of {len(t['seeds'])}",
            "χ below control (any gap)": f"{t['chi_below_control']} of {len(t['paired_seeds'])}",
            "gap over seeds": f"{t['gap_mean']:+.3f}"
            + ("" if t["gap_sd"] is None else f" ± {t['gap_sd']:.3f}"),
        }
        for t in summary["targets"]
    ]
    lines = markdown_table(run_rows, align="rlrrrrrrrr")
    lines += [
        "",
        f"χ-derived weights against their same-share control (gap: control's metric minus "
        f"the χ weighting's; resolved where its size exceeds {summary['resolution']:.2f}):",
        "",
        *markdown_table(pair_rows, align="rlrrl"),
        "",
        *markdown_table(target_rows, align="lrlllrrr"),
    ]
    return "\n".join(lines) + "\n"


def _column(run: dict) -> str:
    return run["condition"] if run["alpha"] is None else f"{run['condition']} ×{run['alpha']:g}"


def summary_columns(runs: Sequence[dict]) -> list[str]:
    """The plot's columns (``"chi_amplify ×2"``): ``baseline`` first, then the unweighted
    edits, then by dose, each χ weighting followed by its control."""
    family = {control: chi for chi, control in CONTROL_OF.items()}

    def order(run: dict) -> tuple:
        condition = run["condition"]
        return (
            condition != "baseline",
            run["alpha"] or 0.0,
            family.get(condition, condition),
            condition in family,
        )

    columns: list[str] = []
    for run in sorted(runs, key=order):
        if _column(run) not in columns:
            columns.append(_column(run))
    return columns


def plot_outline_summary(summary: dict, path: str | os.PathLike[str]) -> Path:
    """One column per condition and dose, one point per seed (fin metric ± sd over its
    4-chain sets), each seed's baseline dashed in its colour and half of it (the
    target for a χ weighting) dotted."""
    from patterning_core.report.pyplot import plt, save_figure

    runs = summary["runs"]
    columns = summary_columns(runs)
    seeds = sorted({r["seed"] for r in runs})
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(columns), 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, seed in enumerate(seeds):
        colour = colours[i % len(colours)]
        mine = [r for r in runs if r["seed"] == seed]
        xs = [columns.index(_column(r)) + 0.12 * (i - (len(seeds) - 1) / 2) for r in mine]
        ax.errorbar(
            xs,
            [r["fin_metric"] for r in mine],
            yerr=[r["fin_metric_sd"] for r in mine],
            fmt="o",
            color=colour,
            capsize=2,
            label=f"seed {seed}",
        )
        base = [r["fin_metric"] for r in mine if r["condition"] == "baseline"]
        if base:
            ax.axhline(base[0], color=colour, lw=0.8, ls="--")
            ax.axhline(base[0] / 2, color=colour, lw=0.8, ls=":")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fin metric (4-chain sets)")
    ax.set_title("The outline fin per seed (dashed: baseline; dotted: half of it)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)
