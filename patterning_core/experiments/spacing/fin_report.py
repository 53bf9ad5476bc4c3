"""The spacing-fin experiment's numbers (``summarize_fin``: what ``results.json`` holds,
with the targets met or missed) and its report (``fin_report``: Markdown and one figure,
pyplot through ``patterning_core.report.pyplot``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patterning_core.experiments.spacing.further_mode import outcome

__all__ = [
    "CONTROL_MAX_CUT",
    "REMOVED_NULLS",
    "SUPPRESS_MIN_CUT",
    "changes_over_seeds",
    "fin_report",
    "summarize_fin",
]

SUPPRESS_MIN_CUT = 0.5  # χ-suppress must cut the fin metric by at least half, every seed
CONTROL_MAX_CUT = 0.25  # the control must cut it by less than a quarter
REMOVED_NULLS = 2.0  # "removed": the metric within this many null levels of no structure

FIN_NOTE = """\
Fin metric: over the probe units whose target is a space inside a run (its position k = 1,
2, … counted from the first space after a non-space token; runs reaching back to the start
of the sequence left out), Spearman's ρ between k and each of the 8 leading modes' unit
loadings of the per-component standardized χ; the fin mode is the mode with the largest
|ρ| and the metric is that |ρ|. "null" is √(2 ln 16 / m) for m such units: about the
largest |ρ| of 8 modes unrelated to run position. Loss-controlled: the same with the partial
Spearman ρ given each unit's posterior mean loss (how well a space is predicted changes
along its run, and susceptibilities scale with it; see `experiments/spacing/fin.py`).
Position beyond the loss: run position predicted out of fold (ridge, 5 folds) from each
space unit's direction in χ space together with its loss, minus the same from the loss
alone (Spearman ρ with the position; "from χ" uses the directions alone). It reads the
whole susceptibility vector rather than one mode, and an ordering that only follows how
hard a space is to predict scores 0 there. Position beyond the initialization: the same
decoding from the trained model's χ directions, the initialization's (χ of the same seed's
step-0 model on the same probe units) and the loss together, minus the initialization's
with the loss: an untrained network already orders the spaces of a run (its attention
averages over a context that holds more spaces the deeper the run is), so only this part
of the fin is learned; the init-controlled targets use it. Found again: the store's chains
cut in two halves, each half's χ read as its own estimate, |cos| between the unit loadings of
the two halves' fin modes (1: the same direction; about 1/√units for unrelated ones); a fin
mode an independent estimate does not find again is mostly sampler noise (see
`experiments/spacing/fin_chains.py` for readings over more chains)."""


def _found_again(fin: Mapping[str, Any]) -> float | None:
    """|cos| between the fin modes of the two halves of the chains (``fin_store.found_again``),
    None where the reading lacks it."""
    again = fin.get("found_again")
    return None if again is None else again["agreement"]


def _decoding(fin: Mapping[str, Any], key: str) -> float | None:
    """One number of a fin's position decoding (None for a fin read before it existed, or
    ``beyond_init`` of a fin read without an initialization)."""
    value = (fin.get("decoding") or {}).get(key)
    return None if value is None else float(value)


def _cut_targets(
    suppress_cuts: Sequence[float | None], control_cuts: Sequence[float | None]
) -> dict[str, bool]:
    """The two cut targets on every seed's cut (None: undefined, fails): χ-suppress cuts at
    least ``SUPPRESS_MIN_CUT``, the control less than ``CONTROL_MAX_CUT``."""
    return {
        "suppress_halves_every_seed": bool(
            suppress_cuts and all(c is not None and c >= SUPPRESS_MIN_CUT for c in suppress_cuts)
        ),
        "control_cuts_less_than_a_quarter": bool(
            control_cuts and all(c is not None and c < CONTROL_MAX_CUT for c in control_cuts)
        ),
    }


def summarize_fin(
    settings: Mapping[str, Any],
    growth: Sequence[Mapping[str, Any]],
    weights: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    wall_seconds: float,
    further_plan: Mapping[str, Any] | None = None,
    noise: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``results.json``: the fin over the reference's training (``growth``, one fin per χ
    checkpoint), the weights' summary, one row per retrained run, and the targets per seed
    (cut = 1 − metric / the same seed's baseline metric). With ``further_plan`` (the
    further mode's plan, ``further_mode.plan_further_mode``'s summary) and each run's
    ``further`` reading, also ``further_mode``: the plan, every run's reading and the
    prediction's outcome (``further_mode.outcome``). ``noise``: the readings' sampler noise
    (``further_mode.sampler_noise``), kept as ``sampler_noise``."""
    base = {r["seed"]: r for r in runs if r["condition"] == "baseline"}
    rows = []
    for r in runs:
        b = base.get(r["seed"])
        cut = 1 - r["fin_metric"] / b["fin_metric"] if b and b["fin_metric"] > 0 else None
        partial, b_partial = r["fin"].get("partial_metric"), b and b["fin"].get("partial_metric")
        partial_cut = 1 - partial / b_partial if partial is not None and b_partial else None
        rows.append(
            {
                "seed": r["seed"],
                "condition": r["condition"],
                "fin_metric": r["fin_metric"],
                "fin_mode": r["fin"]["mode"],
                "fin_null": r["fin"]["null"],
                "cut": cut,
                "fin_metric_loss_controlled": partial,
                "cut_loss_controlled": partial_cut,
                "fin_beyond_loss": _decoding(r["fin"], "beyond_loss"),
                "position_from_chi": _decoding(r["fin"], "from_chi"),
                "position_from_loss": _decoding(r["fin"], "from_loss"),
                "fin_beyond_init": _decoding(r["fin"], "beyond_init"),
                "fin_found_again": _found_again(r["fin"]),
                "loss_whitespace": r["loss_whitespace"],
                "loss_other": r["loss_other"],
                "step": r["step"],
            }
        )

    def per(condition: str) -> list[dict]:
        return [r for r in rows if r["condition"] == condition]

    suppress, control = per("chi_suppress"), per("control_dose")
    collapse = per("collapse_whitespace")
    s_cuts, c_cuts = [r["cut"] for r in suppress], [r["cut"] for r in control]
    targets = {
        "reference_fin_at_least_0.6": bool(growth[-1]["metric"] >= 0.6),
        **_cut_targets(s_cuts, c_cuts),
        "collapse_removes_the_fin": bool(
            collapse and all(r["fin_metric"] <= REMOVED_NULLS * r["fin_null"] for r in collapse)
        ),
    }
    controlled = {}
    if all(r["fin_metric_loss_controlled"] is not None for r in rows):
        sp = [r["cut_loss_controlled"] for r in suppress]
        cp = [r["cut_loss_controlled"] for r in control]
        controlled = {
            **_cut_targets(sp, cp),
            "collapse_removes_the_fin": bool(
                collapse
                and all(
                    r["fin_metric_loss_controlled"] <= REMOVED_NULLS * r["fin_null"]
                    for r in collapse
                )
            ),
        }
    init_controlled = _init_controlled_targets(rows)
    further = None
    if further_plan is not None:
        readings = [
            {"seed": r["seed"], "condition": r["condition"], "further": r["further"]}
            for r in runs
            if "further" in r
        ]
        further = {
            "plan": dict(further_plan),
            "runs": readings,
            "outcome": outcome(further_plan, readings),
        }
    return {
        "fin_metric_reference": growth[-1]["metric"],
        "fin_beyond_loss_reference": _decoding(growth[-1], "beyond_loss"),
        "fin_beyond_init_reference": _decoding(growth[-1], "beyond_init"),
        "fin_metric_initialization": next((g["metric"] for g in growth if g["step"] == 0), None),
        "probe_tokens": growth[-1]["probe_units"],
        "space_units": growth[-1]["space_units"],
        "checkpoints": [g["step"] for g in growth],
        "growth": [dict(g) for g in growth],
        "weights_step": settings["weights_step"],
        "weights": dict(weights),
        "runs": rows,
        "changes_over_seeds": changes_over_seeds(rows),
        "targets": targets,
        "targets_loss_controlled": controlled,
        "targets_init_controlled": init_controlled,
        "wall_seconds": wall_seconds,
        "settings": dict(settings),
        "fin_note": FIN_NOTE,
        "further_mode": further,
        "sampler_noise": dict(noise) if noise else None,
    }


CHANGE_READINGS = ("fin_metric", "fin_metric_loss_controlled", "fin_beyond_loss", "fin_beyond_init")


def changes_over_seeds(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = CHANGE_READINGS
) -> list[dict[str, Any]]:
    """Each condition's change against the same seed's baseline, over the seeds: for every
    condition but the baseline and every reading in ``keys`` (a run row's field), ``mean``
    and ``sd`` (sample standard deviation, ``ddof=1``; None for one seed) of
    ``run[key] − baseline[key]`` over the seeds that have both, and ``n`` of them. The spread
    over seeds holds the training seed's and the sampler's noise together, which is what a
    condition's effect must stand out from.

    Returns ``[{"condition", "n", "<key>": {"mean", "sd"} | None}, ...]`` in the rows' order
    of first appearance."""
    base = {r["seed"]: r for r in rows if r["condition"] == "baseline"}
    conditions = list(dict.fromkeys(r["condition"] for r in rows if r["condition"] != "baseline"))
    out = []
    for condition in conditions:
        runs = [r for r in rows if r["condition"] == condition and r["seed"] in base]
        entry: dict[str, Any] = {"condition": condition, "n": len(runs)}
        for key in keys:
            diffs = [
                r[key] - base[r["seed"]][key]
                for r in runs
                if r.get(key) is not None and base[r["seed"]].get(key) is not None
            ]
            entry[key] = (
                {
                    "mean": float(np.mean(diffs)),
                    "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
                }
                if diffs
                else None
            )
        out.append(entry)
    return out


def _init_controlled_targets(rows: Sequence[dict]) -> dict[str, bool]:
    """The targets read on the run position beyond the initialization (``fin_beyond_init``;
    cut against the same seed's baseline): the baseline holds a learned fin (above
    ``REMOVED_NULLS`` null levels), χ-suppress halves it, the control cuts less than a
    quarter, the data edit leaves it within ``REMOVED_NULLS`` null levels. A cut of a seed
    whose baseline holds no learned fin is undefined (nothing to cut, or to spare), so the
    cut targets fail there. Empty when a run has no initialization χ."""
    if not rows or any(r["fin_beyond_init"] is None for r in rows):
        return {}

    def learned(r: dict) -> bool:
        return r["fin_beyond_init"] > REMOVED_NULLS * r["fin_null"]

    baselines = [r for r in rows if r["condition"] == "baseline"]
    base = {r["seed"]: r["fin_beyond_init"] for r in baselines if learned(r)}

    def cuts(condition: str) -> list[float | None]:
        return [
            1 - r["fin_beyond_init"] / base[r["seed"]] if r["seed"] in base else None
            for r in rows
            if r["condition"] == condition
        ]

    collapse = [r for r in rows if r["condition"] == "collapse_whitespace"]
    s_cuts, c_cuts = cuts("chi_suppress"), cuts("control_dose")
    return {
        "baseline_fin_learned_every_seed": bool(baselines and all(map(learned, baselines))),
        **_cut_targets(s_cuts, c_cuts),
        "collapse_removes_the_fin": bool(collapse and not any(map(learned, collapse))),
    }


def _plot(out: Path, numbers: Mapping[str, Any]) -> str:
    from patterning_core.report.pyplot import plt, save_figure

    fig, (a, b, c, d) = plt.subplots(1, 4, figsize=(20, 4))
    g = numbers["growth"]
    steps = [x["step"] for x in g]
    a.plot(steps, [x["metric"] for x in g], "o-", label="fin metric")
    beyond = [_decoding(x, "beyond_loss") for x in g]
    if all(v is not None for v in beyond):
        a.plot(steps, beyond, "s--", label="position beyond the loss")
    learned = [(x["step"], _decoding(x, "beyond_init")) for x in g]
    learned = [(step, v) for step, v in learned if v is not None]
    if learned:
        a.plot(*zip(*learned, strict=True), "^-.", label="position beyond the initialization")
    a.plot(steps, [x["null"] for x in g], "k:", label="null level")
    a.set_xlabel("training step (reference)")
    a.set_ylabel("|Spearman ρ|")
    a.set_ylim(-0.1, 1)
    a.legend()
    a.set_title("the fin over training")
    conditions = ["baseline", "collapse_whitespace", "chi_suppress", "control_dose"]
    conditions += sorted({r["condition"] for r in numbers["runs"]} - set(conditions))
    for axis, key, title in (
        (b, "fin_metric", "fin metric of χ on each retrained model"),
        (c, "fin_beyond_loss", "run position beyond the loss"),
        (d, "fin_beyond_init", "run position beyond the initialization"),
    ):
        for i, condition in enumerate(conditions):
            values = [
                r[key]
                for r in numbers["runs"]
                if r["condition"] == condition and r.get(key) is not None
            ]
            axis.scatter([i] * len(values), values, s=30)
            if values:
                axis.hlines(np.mean(values), i - 0.25, i + 0.25, color="k")
        axis.set_xticks(range(len(conditions)), conditions, rotation=15)
        axis.set_ylim(-0.2, 1)
        axis.set_title(title)
    path = out / "fin.png"
    save_figure(fig, path)
    return path.name


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.3f}"


def fin_report(out: Path, numbers: Mapping[str, Any]) -> str:
    """The Markdown report (and ``fin.png`` beside it)."""
    from patterning_core.report.markdown import markdown_table

    figure = _plot(Path(out), numbers)
    w = numbers["weights"]
    lines = [
        "# The spacing fin, grown and erased",
        "",
        f"Written by the `spacing-fin` flow in {numbers['wall_seconds']:.0f} s (cached runs and "
        f"χ are not recomputed). χ over {numbers['probe_tokens']} probe units, "
        f"{numbers['space_units']} of them spaces inside runs.",
        "",
        numbers["fin_note"],
        "",
        "## The fin over the reference's training",
        "",
    ]
    lines += markdown_table(
        [
            {
                "step": str(g["step"]),
                "fin metric": f"{g['metric']:.3f}",
                "ρ": f"{g['rho']:+.3f}",
                "fin mode": str(g["mode"]),
                "its variance": f"{100 * g['explained_variance']:.1f} %",
                "null": f"{g['null']:.3f}",
                "loss-controlled": _fmt(g.get("partial_metric")),
                "ρ(position, loss)": _fmt(g.get("control_rho"), signed=True),
                "position from χ": _fmt(_decoding(g, "from_chi")),
                "beyond the loss": _fmt(_decoding(g, "beyond_loss"), signed=True),
                "beyond the initialization": _fmt(_decoding(g, "beyond_init"), signed=True),
                "found again": _fmt(_found_again(g)),
            }
            for g in numbers["growth"]
        ],
        align=["r"] * 12,
    )
    lines += [
        "",
        f"![fin]({figure})",
        "",
        "## Interventions",
        "",
        f"χ-suppress weights from χ at step {numbers['weights_step']} (fin mode {w['mode']}); "
        f"class fit R² {w['fit_r2']:.3f}; dose mean|ρ − 1|: χ {w['dose']['chi_suppress']:.3f}, "
        f"control {w['dose']['control_dose']:.3f}; whitespace share of the weight: uniform "
        f"{w['whitespace_share']['uniform']:.3f}, χ {w['whitespace_share']['chi_suppress']:.3f}, "
        f"control {w['whitespace_share']['control_dose']:.3f}.",
        "",
    ]
    lines += markdown_table(
        [
            {
                "seed": str(r["seed"]),
                "condition": r["condition"],
                "fin metric": f"{r['fin_metric']:.3f}",
                "cut vs baseline": _fmt(r["cut"], signed=True),
                "loss-controlled": _fmt(r["fin_metric_loss_controlled"]),
                "its cut": _fmt(r["cut_loss_controlled"], signed=True),
                "position from χ": _fmt(r.get("position_from_chi")),
                "beyond the loss": _fmt(r.get("fin_beyond_loss"), signed=True),
                "beyond the initialization": _fmt(r.get("fin_beyond_init"), signed=True),
                "found again": _fmt(r.get("fin_found_again")),
                "loss, whitespace": f"{r['loss_whitespace']:.3f}",
                "loss, other": f"{r['loss_other']:.3f}",
            }
            for r in numbers["runs"]
        ],
        align=["r", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
    )
    if numbers.get("changes_over_seeds"):
        lines += [
            "",
            *_changes_section(numbers["changes_over_seeds"], numbers.get("sampler_noise")),
        ]
    lines += ["", "## Targets", ""]
    lines += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in numbers["targets"].items()]
    controlled = numbers.get("targets_loss_controlled") or {}
    lines += [
        f"- {k} (loss-controlled): {'met' if v else 'NOT met'}" for k, v in controlled.items()
    ]
    lines += [
        f"- {k} (beyond the initialization): {'met' if v else 'NOT met'}"
        for k, v in (numbers.get("targets_init_controlled") or {}).items()
    ]
    if numbers.get("sampler_noise"):
        lines += ["", *_noise_section(numbers["sampler_noise"], numbers.get("further_mode"))]
    if numbers.get("further_mode"):
        lines += ["", *_further_mode_section(numbers["further_mode"])]
    return "\n".join(lines) + "\n"


def _changes_section(
    changes: Sequence[Mapping[str, Any]], noise: Mapping[str, Any] | None
) -> list[str]:
    """The table of :func:`changes_over_seeds`, with the sampler noise beside it."""
    from patterning_core.report.markdown import markdown_table

    def cell(value: Mapping[str, float | None] | None) -> str:
        if value is None:
            return "–"
        sd = value["sd"]
        return f"{value['mean']:+.3f}" + ("" if sd is None else f" ± {sd:.3f}")

    lines = [
        "Change against the same seed's baseline, mean ± sd over the seeds (the sd holds the "
        "training seed's and the sampler's noise together):",
        "",
        *markdown_table(
            [
                {
                    "condition": c["condition"],
                    "seeds": str(c["n"]),
                    "Δ fin metric": cell(c.get("fin_metric")),
                    "Δ loss-controlled": cell(c.get("fin_metric_loss_controlled")),
                    "Δ beyond the loss": cell(c.get("fin_beyond_loss")),
                    "Δ beyond the initialization": cell(c.get("fin_beyond_init")),
                }
                for c in changes
            ],
            align=["l", "r", "r", "r", "r", "r"],
        ),
    ]
    if noise:
        lines += [
            "",
            f"One model's fin metric from two SGLD seeds differs by "
            f"{noise['fin_metric_difference']:+.3f} (Sampler noise, below).",
        ]
    return lines


def _noise_section(noise: Mapping[str, Any], further: Mapping[str, Any] | None) -> list[str]:
    """The readings of the reference's χ and of its replica with another SGLD seed."""
    from patterning_core.report.markdown import markdown_table

    rows = [
        {
            "reading": "fin metric",
            "first estimate": f"{noise['fin_metric'][0]:.3f}",
            "second estimate": f"{noise['fin_metric'][1]:.3f}",
            "difference": f"{noise['fin_metric_difference']:+.3f}",
        }
    ]
    if "separation" in noise and further:
        c = further["plan"]["pattern_class"]
        value, se = noise["phi_along_prediction"]
        rows += [
            {
                "reading": f"`{c}` separation",
                "first estimate": f"{noise['separation'][0]:.3f}",
                "second estimate": f"{noise['separation'][1]:.3f}",
                "difference": f"{noise['separation_difference']:+.3f}",
            },
            {
                "reading": "⟨φ⟩ along the further mode's nβ·χ·dh",
                "first estimate": "",
                "second estimate": "",
                "difference": f"{value:+.4f} (chains' SE {se:.4f})",
            },
        ]
    return [
        "## Sampler noise",
        "",
        "The reference's χ at its last χ checkpoint estimated again with another SGLD seed "
        "and read as every retrained run is read: a change read off one χ estimate carries "
        "this on top of its baseline's.",
        "",
        *markdown_table(rows, align=["l", "r", "r", "r"]),
    ]


def _further_mode_section(further: Mapping[str, Any]) -> list[str]:
    """The further mode's plan (as written before retraining), every run's reading and the
    prediction's outcome, as Markdown lines."""
    from patterning_core.report.markdown import markdown_table

    plan = further["plan"]
    c = plan["pattern_class"]
    lines = [
        "## A further mode, amplified",
        "",
        f"Picked at the weights step by the rule of `experiments/spacing/further_mode.py` "
        f"(fin mode {plan['fin_mode']} and PC1 left out): mode {plan['mode']}, whose unit "
        f"loadings separate the `{c}` tokens (point-biserial r = {plan['r']:+.3f}). Amplify "
        f"weights along it: class fit R² {plan['fit_r2']:.3f}, dose mean|ρ − 1| "
        f"{plan['dose']:.3f}, largest weight {plan['max_weight']:.2f}. Predicted before any "
        "run was retrained (`further_mode_plan.json`):",
        "",
        *[f"{i}. {line}" for i, line in enumerate(plan["prediction"], 1)],
        "",
    ]
    lines += markdown_table(
        [
            {
                "seed": str(r["seed"]),
                "condition": r["condition"],
                f"loss, {c}": f"{r['further']['loss']['class']:.3f}",
                "loss, other": f"{r['further']['loss']['other']:.3f}",
                f"{c} separation (mode)": (
                    f"{r['further']['separation']['separation']:.3f} "
                    f"({r['further']['separation']['mode']})"
                ),
            }
            for r in further["runs"]
        ],
        align=["r", "l", "r", "r", "r"],
    )
    lines += ["", "Changes against the baseline of the same seed (every condition):", ""]
    rows = []
    for s in further["outcome"]["seeds"]:
        for condition, ch in s["conditions"].items():
            value, se = ch["along"]
            own = condition == "chi_further_mode"
            rows.append(
                {
                    "seed": str(s["seed"]),
                    "condition": condition,
                    f"Δ(loss {c} − other)": f"{ch['loss_gap_change']:+.3f}",
                    f"Δ {c} separation": f"{ch['separation_change']:+.3f}",
                    "Δ⟨φ⟩ along nβ·χ·dh": f"{value:+.4f} ± {se:.4f}",
                    "loop cosine / gain": (
                        f"{s['loop']['cosine']:+.2f} / {s['loop']['gain']:+.1f}" if own else ""
                    ),
                    "met (loss / map / loop)": (
                        " / ".join("yes" if s["met"][k] else "no" for k in ("loss", "map", "loop"))
                        if own
                        else ""
                    ),
                }
            )
    lines += markdown_table(rows, align=["r", "l", "r", "r", "r", "r", "l"])
    lines += [
        "",
        "The separation is read off one χ estimate per run, the loop's shifts carry the "
        "standard errors of the chains; what two estimates of one model differ by is under "
        "Sampler noise.",
    ]
    return lines
