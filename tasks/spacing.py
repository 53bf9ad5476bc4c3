"""Prefect tasks of the spacing experiment: weights along the χ mode of the whitespace
heads, the measures of a retrained run, and the report (Markdown + PNG, also a Prefect
artifact). The flow is ``flows/spacing.py``; the measures are
``patterning_core.experiments.spacing.science``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.decomposition import decompose
from patterning_core.estimators.mode_weights import mode_weights
from patterning_core.experiments.spacing.science import (
    spacing_classes,
    spacing_scores,
    spacing_units,
    unit_losses_by_kind,
    whitespace_correlations,
)
from patterning_core.model.checkpoints import (
    checkpoint_path,
    final_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from patterning_core.sampling.config import ConfigError
from patterning_core.store.chi_store import chi_at
from patterning_core.store.workloads import build_workload
from tasks.retraining import save_weights

# Amplify makes the heads with high spacing scores express their units more (the Induce
# rule of induction_patterning with spacing scores in place of prefix-matching scores).
CONDITION_OF = {"induce": "amplify", "repress": "suppress"}


@task(name="spacing-weights")
def spacing_weights(
    chi_store: str,
    chi_step: int,
    reference_run_dir: str,
    data: dict,
    alpha: float,
    eval_seqs: int,
    out_dir: str,
) -> dict:
    """Amplify/Suppress weights for every training unit, written as ``.npy`` files.

    Spacing scores of the heads at the reference run's last checkpoint (on ``eval_seqs``
    validation sequences); χ at ``chi_step`` from the store; the spacing mode is the one
    whose unit loadings correlate most (in absolute value) with the whitespace-target
    indicator; the extrapolation to training units is by spacing class. Returns (and writes
    to ``out_dir/weights.json``) ``{"files": {"induce"|"repress": {"path", "digest"}},
    "spacing": {...numbers for the report}}``.
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
    files = {}
    for key in CONDITION_OF:
        path, digest = save_weights(result.weights[key], Path(out_dir) / "weights")
        files[key] = {"path": path, "digest": digest}
    s = result.summary
    info = {
        "files": files,
        "spacing": {
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
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=float))
    get_run_logger().info(
        "χ at step %d: spacing mode %d (whitespace correlation %+.2f), class R² %.3f",
        chi_step,
        s["mode"],
        info["spacing"]["whitespace_correlation"][s["mode"]],
        s["fit_r2"],
    )
    return info


@task(name="spacing-measures")
def spacing_measures(run_dir: str, data: dict, eval_seqs: int, curve_every: int = 500) -> dict:
    """Validation loss on whitespace and other targets (final, and every ``curve_every``
    steps) and the heads' spacing scores at the last checkpoint of ``run_dir``."""
    last, final = final_checkpoint(run_dir)
    ckpts = dict(list_checkpoints(run_dir))
    tokens = load_lm_tokens(data, final.config)
    val, strings = tokens.val[:eval_seqs], tokens.token_strings
    curve_steps = [s for s in sorted(ckpts) if s % curve_every == 0 or s == last]
    curve = [
        unit_losses_by_kind(
            (final if s == last else load_checkpoint(ckpts[s])).params, final.config, val, strings
        )
        for s in curve_steps
    ]
    return {
        "losses": curve[-1],
        "spacing_scores": spacing_scores(final.params, final.config, val, strings),
        "curve_steps": curve_steps,
        "curve": curve,
    }


@task(name="spacing-report")
def write_spacing_report(out_dir: str, numbers: dict) -> dict:
    """``spacing.md``, ``spacing.png`` and ``spacing.json`` in ``out_dir``; the Markdown is
    also published as a Prefect artifact. Returns ``{"report", "rows"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spacing.json").write_text(json.dumps(numbers, indent=1, default=float))
    _plot(numbers, out / "spacing.png")
    text = _markdown(numbers)
    (out / "spacing.md").write_text(text)
    create_markdown_artifact(key="spacing-report", markdown=text, description="spacing experiment")
    rows = [
        {
            "condition": r["condition"],
            "seed": r["seed"],
            "loss_whitespace": round(r["losses"]["spacing"], 3),
            "loss_other": round(r["losses"]["other"], 3),
            "best_head_score": round(max(r["spacing_scores"].values()), 3),
        }
        for r in numbers["results"]
    ]
    return {"report": str(out / "spacing.md"), "rows": rows}


def _plot(n: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patterning_core.report.plots import save_figure

    colors = {"baseline": "black", "amplify": "tab:blue", "suppress": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in n["results"]:
        style = "-" if r["seed"] == n["seeds"][0] else "--"
        for ax, kind in zip(axes, ("spacing", "other"), strict=True):
            ax.plot(
                n["curve_steps"],
                [c[kind] for c in r["curve"]],
                style,
                color=colors[r["condition"]],
                label=f"{r['condition']} s{r['seed']}",
            )
    for ax, kind in zip(axes, ("whitespace targets", "other targets"), strict=True):
        ax.set_title(f"validation loss on {kind}")
        ax.set_xlabel("step")
        ax.set_ylabel("nats")
        ax.set_ylim(top=4.5)
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def _markdown(n: dict) -> str:
    top = n["spacing_heads"]
    ws = n["whitespace_correlation"]
    mode = n["mode"]
    rows = []
    for r in n["results"]:
        s = r["spacing_scores"]
        rows.append(
            f"| {r['condition']} | {r['seed']} | {r['losses']['spacing']:.3f} | "
            f"{r['losses']['other']:.3f} | {s[top[0]]:.3f} | {s[top[1]]:.3f} | "
            f"{max(s.values()):.3f} |"
        )
    modes = "\n".join(
        f"| {m} | {100 * ev:.1f} % | {n['alignments'][m]:+.2f} | {ws[m]:+.2f} |"
        for m, ev in zip(sorted(ws), n["explained_variance"], strict=True)
    )
    ref = n["reference_spacing_scores"]
    ref_rows = " | ".join(f"{ref[h]:.3f}" for h in sorted(ref))
    p = n["patterning"]
    cls = " | ".join(f"{c}: {v:+.2e}" for c, v in p["class_dh_induce"].items())
    return f"""# The spacing experiment

Generated by the `spacing` flow (`patterning spacing`; numbers measured, not assumed):
`{n["preset"]}` preset on `{json.dumps(n["data"])}`, {n["steps"]} steps per run, seeds
{n["seeds"]}, α = {n["alpha"]}; {n["seconds_total"]:.0f} s for this call of the flow (cached
runs and χ are not recomputed).

## Spacing heads (reference baseline, seed {n["seeds"][0]}, step {n["scores_step"]})

Spacing score = rise of the mean validation loss on whitespace targets minus the rise on all
other targets when the head's output is zero-ablated (nats). Heads:
{", ".join(sorted(ref))}

{ref_rows}

Spacing heads (two highest): **{top[0]}**, **{top[1]}**.

## χ at step {n["chi_step"]} and the spacing mode

{n["probe_units"]} probe units, {n["probe_spacing_units"]} of them whitespace targets.
Alignment = cosine of the mode's head loadings with the centred spacing scores; whitespace
correlation = correlation of its unit loadings with the whitespace-target indicator.

| mode | variance | alignment with spacing scores | whitespace correlation |
|---:|---:|---:|---:|
{modes}

Spacing mode: **{mode}** (largest |whitespace correlation|; the sign of Amplify makes the
heads with high spacing scores express their units more, χ < 0 convention).
dh per class (Amplify): {cls}.
Class fit R² = {p["fit_r2"]:.3f}; target retained after extrapolation: cosine
{p["target_retained"]["cosine"]:.2f}.

## Retraining from the same initialization and data order

Validation loss on whitespace and on other targets at step {n["steps"]}, and spacing scores
of the two reference spacing heads and of the best head of the run.

| condition | seed | loss, whitespace | loss, other | {top[0]} | {top[1]} | best head |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

![curves](spacing.png)
"""
