"""Prefect tasks of the spacing-fin experiment (``patterning_core/experiments/spacing``:
``fin``, ``fin_store``, ``fin_weights``, ``fin_report``): the fin read off a χ store, the
suppress and control weights written as files, and the report. The flow is
``flows/spacing_fin.py``."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.experiments.induction.loop import localized_loss
from patterning_core.experiments.spacing.fin_report import fin_report
from patterning_core.experiments.spacing.fin_store import fin_at, probe_tokens
from patterning_core.experiments.spacing.fin_weights import fin_weights
from patterning_core.experiments.spacing.further_mode import (
    class_labels,
    plan_further_mode,
    run_class_loss,
    separation_of,
)
from patterning_core.store.chi_store import chi_at, read_stats
from tasks.reporting import publish_report
from tasks.retraining import save_weights
from tasks.training import model_preset


@task(name="fin-metric")
def fin_of_store(
    store: str, step: int, preset: str, label: str = "", init_store: str | None = None
) -> dict:
    """The fin metric of checkpoint ``step`` of ``store`` (``fin_store.fin_at``; with
    ``init_store``, χ of the model's initialization at step 0, also the run position beyond
    the initialization)."""
    init = None if init_store is None else (init_store, 0)
    fin = fin_at(store, step, model_preset(preset), init)
    get_run_logger().info(
        "%s step %d: fin metric %.3f (mode %d, null %.3f)",
        label or store,
        step,
        fin["metric"],
        fin["mode"],
        fin["null"],
    )
    return fin


@task(name="fin-weights")
def fin_suppress_weights(
    store: str, step: int, fin: dict, data: dict, preset: str, alpha: float, out_dir: str
) -> dict:
    """χ-suppress and same-dose control weights for every training unit, written as
    ``.npy`` files: ``{"files": {"chi_suppress"|"control_dose": {"path", "digest"}},
    "summary": {...}}`` (also ``out_dir/fin_weights.json``)."""
    config = model_preset(preset)
    chi, n_beta, ds = chi_at(store, step)
    probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
    train = load_lm_tokens(data, config).train
    result = fin_weights(chi, n_beta, fin, probes, train, strings, alpha)
    files = {}
    for name, weights in result.weights.items():
        path, digest = save_weights(weights, Path(out_dir) / "weights")
        files[name] = {"path": path, "digest": digest}
    info = {"files": files, "summary": result.summary}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "fin_weights.json").write_text(json.dumps(info, indent=1, default=float))
    return info


@task(name="further-mode-weights")
def further_mode_plan(
    store: str, step: int, fin: dict, data: dict, preset: str, alpha: float, out_dir: str
) -> dict:
    """The further mode picked at checkpoint ``step`` (the fin mode ``fin["mode"]`` left
    out), its amplify weights written as a ``.npy`` file, and the plan with its prediction
    written to ``out_dir/further_mode_plan.json`` *before* any run is retrained
    (``experiments/spacing/further_mode.py``). Returns ``{"files": {"chi_further_mode":
    {"path", "digest"}}, "summary": {...}}``."""
    config = model_preset(preset)
    chi, n_beta, ds = chi_at(store, step)
    probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
    train = load_lm_tokens(data, config).train
    plan = plan_further_mode(chi, n_beta, int(fin["mode"]), probes, train, strings, alpha)
    path, digest = save_weights(plan.weights, Path(out_dir) / "weights")
    files = {"chi_further_mode": {"path": path, "digest": digest}}
    info = {"files": files, "summary": plan.summary}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "further_mode_plan.json").write_text(json.dumps(info, indent=1, default=float))
    logger = get_run_logger()
    logger.info(
        "further mode %d (%s, r = %+.2f), predicted before retraining:",
        plan.summary["mode"],
        plan.summary["pattern_class"],
        plan.summary["r"],
    )
    for line in plan.summary["prediction"]:
        logger.info("  %s", line)
    return info


@task(name="further-mode-reading")
def further_mode_reading(
    store: str,
    step: int,
    preset: str,
    pattern_class: str,
    run_dir: str,
    data: dict,
    eval_seqs: int,
) -> dict:
    """What the further mode's prediction reads off one retrained run at ``step``: the
    class separation of its χ, the class's validation loss against the rest, and every
    component's localized loss ⟨φ_C⟩ with its standard error."""
    config = model_preset(preset)
    chi, _, ds = chi_at(store, step)
    probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
    phi, se = localized_loss(read_stats(store, step), step)
    return {
        "separation": separation_of(chi, class_labels(probes, strings).ravel(), pattern_class),
        "loss": run_class_loss(run_dir, data, eval_seqs, pattern_class),
        "components": [str(c) for c in chi.component.values],
        "phi": phi.tolist(),
        "phi_se": se.tolist(),
    }


@task(name="fin-report")
def write_fin_report(out_dir: str, numbers: dict) -> dict:
    """``report.md``, ``fin.png`` and ``results.json`` in ``out_dir``; the Markdown also as a
    Prefect artifact. Returns ``{"report", "results"}``."""
    return publish_report(out_dir, numbers, fin_report, "spacing-fin-report", "spacing fin")
