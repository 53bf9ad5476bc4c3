"""Prefect tasks of the spacing-fin experiment (``patterning_core/experiments/spacing``:
``fin``, ``fin_store``, ``fin_weights``, ``fin_report``): the fin read off a χ store, the
suppress and control weights written as files, and the report. The flow is
``flows/spacing_fin.py``."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.experiments.spacing.fin_report import fin_report
from patterning_core.experiments.spacing.fin_store import fin_at, probe_tokens
from patterning_core.experiments.spacing.fin_weights import fin_weights
from patterning_core.store.chi_store import chi_at
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


@task(name="fin-report")
def write_fin_report(out_dir: str, numbers: dict) -> dict:
    """``report.md``, ``fin.png`` and ``results.json`` in ``out_dir``; the Markdown also as a
    Prefect artifact. Returns ``{"report", "results"}``."""
    return publish_report(out_dir, numbers, fin_report, "spacing-fin-report", "spacing fin")
