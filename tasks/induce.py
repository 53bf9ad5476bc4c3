"""Prefect tasks of the natural-text induction demonstration
(``patterning_core/experiments/induction``: ``natural_weights``, ``mode_search``,
``natural_report``; ``estimators.convergence``): head scores over a run, the weights written
as files (and the χ and probe weights published), the mode's reproducibility, the χ
convergence check, and the report. The flow is ``flows/induce.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from prefect import get_run_logger, task

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.convergence import (
    beyond_leading_modes,
    structure_reproducibility,
    variant_agreement,
)
from patterning_core.estimators.decomposition import decompose
from patterning_core.experiments.induction.linear_check import (
    circuit_heads,
    induction_linear_check,
)
from patterning_core.experiments.induction.loop import (
    along_direction,
    compare_shift,
    localized_loss,
    predicted_shift,
)
from patterning_core.experiments.induction.metrics import FORMATION_THRESHOLD, induction_curve
from patterning_core.experiments.induction.mode_search import (
    chain_sign_agreement,
    find_induction_mode,
    mode_agreement,
)
from patterning_core.experiments.induction.natural_report import induce_report
from patterning_core.experiments.induction.natural_weights import natural_weights
from patterning_core.experiments.induction.patterning import circuit_scores_from
from patterning_core.experiments.induction.unit_features import predictable_units
from patterning_core.experiments.spacing.fin_store import probe_tokens
from patterning_core.model.checkpoints import file_sha256, load_checkpoint
from patterning_core.model.transformer import head_name
from patterning_core.sampling.config import SamplerConfig
from patterning_core.sampling.diagnostics import integrated_autocorrelation_time
from patterning_core.store.chi_store import (
    CHI_ESTIMATORS,
    chi_at,
    plain_string_coords,
    read_stats,
)
from tasks.caching import expensive_task_policy, result_storage
from tasks.reporting import publish_report
from tasks.retraining import save_weights
from tasks.training import model_preset

MEMOIZED = {
    "cache_policy": expensive_task_policy(),
    "result_storage": result_storage(),
    "persist_result": True,
    "result_serializer": "json",  # never pickle
}


@task(name="induce-head-scores")
def head_score_curve(run_dir: str, preset: str, exclude: list[int] | None = None) -> dict:
    """Every head's prefix-matching and previous-token score at every checkpoint of
    ``run_dir``, the formation step, the later circuit scores (layer 0: previous token;
    later layers: prefix matching; last checkpoint) and how many layer-1 heads end at
    prefix matching ≥ the formation threshold."""
    config = model_preset(preset)
    curve = induction_curve(run_dir, config, exclude=exclude or ())
    pms, prev = curve.scores[-1], curve.previous_token[-1]
    later = circuit_scores_from(pms, prev)
    heads = [
        (head_name(layer, h), float(pms[layer, h]), float(prev[layer, h]))
        for layer in range(config.n_layers)
        for h in range(config.n_heads)
    ]
    return {
        "run_dir": run_dir,
        "steps": curve.steps,
        "best": curve.best,
        "formation_step": curve.formation_step,
        "pms_per_head": curve.scores.tolist(),
        "prev_per_head": curve.previous_token.tolist(),
        "later_scores": later,
        "final_heads": heads,
        "layer1_induction_heads": int((pms[1] >= FORMATION_THRESHOLD).sum()),
        "layer1_heads": int(config.n_heads),
    }


def _probes(ds: xr.Dataset, preset: str):
    return probe_tokens(json.loads(ds.attrs["workload"]), model_preset(preset))


@task(name="induce-weights")
def induce_weights(
    store: str,
    step: int,
    data: dict,
    preset: str,
    head_scores: dict,
    ratio: float,
    n_leading: int,
    out_dir: str,
    publish_dir: str | None = None,
    extrapolator: str = "regression",
    target_mode: int | None = None,
    chi_estimator: str = "two-run",
    balance_positions: bool = False,
    target: str = "mode",
    published_chi: dict | None = None,
    class_neutral: bool = False,
) -> dict:
    """Weights of every condition for every training unit (``natural_weights``), written as
    ``.npy`` files in ``out_dir``; χ at ``step`` with its probe coordinates and the
    extrapolator's probe weights published as ``<publish_dir or out_dir>/published/
    chi_and_probe_weights.nc`` (beside the report, for anyone to recompute the mode). Returns
    ``{"files": {condition: {"path", "digest"}}, "summary", "published"}``.

    ``published_chi`` (``{"path", "sha256", "workload"}``): χ read from that published file
    (:func:`read_published_chi`) instead of ``store``."""
    config = model_preset(preset)
    if published_chi is None:
        chi, n_beta, ds = chi_at(store, step, chi_estimator)
        probes, strings = _probes(ds, preset)
    else:
        chi, n_beta = read_published_chi(published_chi, step, chi_estimator)
        probes, strings = probe_tokens(published_chi["workload"], config)
    tokens = load_lm_tokens(data, config)
    result = natural_weights(
        chi,
        n_beta,
        head_scores,
        probes,
        tokens.train,
        strings,
        ratio=ratio,
        n_leading=n_leading,
        extrapolator=extrapolator,
        target_mode=target_mode,
        balance=balance_positions,
        n_synthetic=tokens.n_synthetic,
        target=target,
        class_neutral=class_neutral,
    )
    files = {}
    for name, weights in result.weights.items():
        path, digest = save_weights(weights, Path(out_dir) / "weights")
        files[name] = {"path": path, "digest": digest}
    published = Path(publish_dir or out_dir) / "published"
    if (
        published_chi is not None
        and (published / "chi_and_probe_weights.nc").resolve()
        == Path(published_chi["path"]).resolve()
    ):
        raise ValueError(
            f"report_dir would overwrite the published χ it reads ({published_chi['path']}): "
            "give the design its own report_dir."
        )
    published.mkdir(parents=True, exist_ok=True)
    chi_out = plain_string_coords(chi.transpose("component", "unit"))
    table = xr.Dataset(
        {
            "chi": chi_out,
            "predictable": ("unit", predictable_units(probes).ravel()),
            **{k: ("unit", np.asarray(v, dtype=np.float64)) for k, v in result.probe.items()},
        },
        attrs={
            "n_beta": n_beta,
            "checkpoint": int(step),
            "chi_convention": "χ_z(φ_C) = −Cov[φ_C, ℓ_z − L], no nβ factor",
            "chi_estimator": chi.attrs.get("estimator", chi_estimator),
            "induction_mode": int(result.summary["mode"]["index"]),
        },
    )
    path = published / "chi_and_probe_weights.nc"
    table.to_netcdf(path)
    info = {"files": files, "summary": result.summary, "published": str(path)}
    (Path(out_dir) / "weights.json").write_text(json.dumps(info, indent=1, default=float))
    mode = result.summary["mode"]
    get_run_logger().info(
        "mode %d (found %s): head alignment %.3f, token correlation %.3f; held-out target "
        "cosine %.3f",
        mode["index"],
        mode["found"],
        mode["head_alignment"],
        mode["token_correlation"],
        result.summary["extrapolation"]["induce"]["heldout_target_cosine"],
    )
    return info


def read_published_chi(source: dict, step: int, chi_estimator: str) -> tuple[xr.DataArray, float]:
    """``(χ [component, unit], nβ)`` from a published ``chi_and_probe_weights.nc``
    (``source["path"]``), refused unless its sha256 is ``source["sha256"]``, it holds χ at
    ``step`` and was estimated with ``chi_estimator``."""
    path = Path(source["path"])
    if not path.is_file():
        raise FileNotFoundError(f"published χ {path} does not exist: check published_chi.")
    digest = file_sha256(path)
    if digest != source["sha256"]:
        raise ValueError(
            f"published χ {path} has sha256 {digest}, the config says {source['sha256']}: the "
            "file changed since the config was written; restore it or update the digest."
        )
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    if int(ds.attrs["checkpoint"]) != int(step):
        raise ValueError(
            f"{path} holds χ at step {ds.attrs['checkpoint']}, weights_step is {step}: set "
            "weights_step to the published checkpoint."
        )
    estimator = str(ds.attrs.get("chi_estimator", "two-run"))
    if not estimator.startswith(chi_estimator):
        raise ValueError(
            f"{path} holds the {estimator!r} χ, the config asks chi_estimator "
            f"{chi_estimator!r}: make them agree."
        )
    chi = ds["chi"].transpose("component", "unit").assign_attrs(estimator=chi_estimator)
    return chi, float(ds.attrs["n_beta"])


@task(name="induce-mode-reproducibility")
def mode_reproducibility(
    store: str,
    replica_store: str,
    step: int,
    preset: str,
    head_scores: dict,
    mode: dict,
    chi_estimator: str = "two-run",
) -> dict:
    """The induction mode found again with another SGLD seed (``replica_store``): |cos| of
    the component loadings; and in how many of the main store's chains its sign holds (χ
    read with ``chi_estimator``, as the weights were)."""
    chi, _, ds = chi_at(store, step, chi_estimator)
    replica, _, _ = chi_at(replica_store, step, chi_estimator)
    probes, _ = _probes(ds, preset)
    predictable = predictable_units(probes).ravel()
    modes = decompose(chi.transpose("component", "unit"), "component")
    modes_r = decompose(replica.transpose("component", "unit"), "component")
    found_r = find_induction_mode(modes_r, head_scores, predictable)
    per_chain = CHI_ESTIMATORS[chi_estimator](read_stats(store, step), per_chain=True)
    count, cosines = chain_sign_agreement(per_chain, modes, mode["index"], mode["sign"])
    return {
        "seed_agreement": mode_agreement(modes, mode["index"], modes_r, found_r["mode"]),
        "replica": {k: v for k, v in found_r.items() if k != "table"},
        "chain_sign_agreement": count,
        "chains": len(cosines),
        "chain_cosines": cosines,
    }


@task(name="induce-chi-convergence")
def chi_convergence(store: str, replica_store: str, variants: dict, step: int) -> dict:
    """Is χ at ``step`` converged, and is its structure beyond PC1 more than noise?

    - ``variants``: per variant store (``{name: {"store", "draw_ratio"}}``)
      ``variant_agreement`` against the chosen settings (``store``) and their seed-to-seed
      noise (``replica_store``), on χ as stored (``raw``; dominated by PC1) and on the
      standardized χ beyond its leading mode (``beyond_pc1``, where the induction mode is);
    - ``structure``: ``structure_reproducibility`` of the two seeds (reliability beyond PC1);
    - ``autocorrelation_time``: median integrated autocorrelation time (in draws) of the
      restricted runs' φ traces, and the effective draws per component it implies."""
    chosen = chi_at(store, step)[0].transpose("component", "unit").values
    replica = chi_at(replica_store, step)[0].transpose("component", "unit").values
    out: dict = {"variants": {}}
    for name, v in variants.items():
        variant = chi_at(v["store"], step)[0].transpose("component", "unit").values
        out["variants"][name] = {
            "raw": variant_agreement(chosen, replica, variant, v["draw_ratio"]),
            "beyond_pc1": variant_agreement(
                *(beyond_leading_modes(x) for x in (chosen, replica, variant)), v["draw_ratio"]
            ),
        }
    out["structure"] = structure_reproducibility(chosen, replica)
    traces = read_stats(store, step)["loss_trace"].values  # [component, chain, draw]
    taus = [integrated_autocorrelation_time(t) for t in traces]
    tau = float(np.nanmedian(taus))
    out["autocorrelation_time"] = {
        "median_draws": tau,  # τ < 1 (short traces, by chance) counts as independent draws
        "effective_draws": float(traces.shape[1] * traces.shape[2] / max(tau, 1.0)),
    }
    return out


@task(name="induce-loop")
def loop_closure(published: str, stores: dict, at: int) -> dict:
    """χ measured again on the retrained models of one seed (``stores``: ``{condition:
    store}`` at checkpoint ``at``; ``"baseline"`` among them): per condition the measured
    shift of every component's localized loss against the baseline run, the first-order
    prediction from the χ and the probe weights the weights were solved with (both from
    their ``published`` file, so from the estimator they inverted), and their comparison
    (``experiments.induction.loop``); and every condition's shift along Induce's predicted
    one (``along_induce`` ± ``along_induce_se``, and ``predicted_along_induce`` where the
    condition has a prediction)."""
    probe = xr.open_dataset(published)
    chi, n_beta = probe["chi"], float(probe.attrs["n_beta"])
    components = [str(c) for c in chi.component.values]
    base, base_se = localized_loss(read_stats(stores["baseline"], at), at)
    out = {}
    for condition, store in stores.items():
        if condition == "baseline":
            continue
        phi, se = localized_loss(read_stats(store, at), at)
        measured = phi - base
        row = {
            "components": components,
            "measured": measured.tolist(),
            "measured_se": np.sqrt(se**2 + base_se**2).tolist(),
        }
        key = f"rho_{condition}"
        if key in probe:
            chi_raw = chi.transpose("component", "unit").values
            predicted = predicted_shift(chi_raw, probe[key].values, n_beta)
            row["predicted"] = predicted.tolist()
            row.update(compare_shift(measured, predicted, components))
        out[condition] = row
    probe.close()
    # Every condition along Induce's predicted direction (the controls' common yardstick).
    if "predicted" in out.get("induce", {}):
        direction = np.asarray(out["induce"]["predicted"])
        for row in out.values():
            value, value_se = along_direction(
                np.asarray(row["measured"]), np.asarray(row["measured_se"]), direction
            )
            row["along_induce"], row["along_induce_se"] = value, value_se
            if "predicted" in row:
                row["predicted_along_induce"] = along_direction(
                    np.asarray(row["predicted"]), np.zeros(len(direction)), direction
                )[0]
    return out


@task(name="induce-report")
def write_induce_report(out_dir: str, numbers: dict) -> dict:
    """``report.md``, ``formation.png`` and ``results.json`` in ``out_dir``; the Markdown
    also as a Prefect artifact. Returns ``{"report", "results"}``."""
    return publish_report(out_dir, numbers, induce_report, "induce-report", "induction")


@task(name="induce-linear-check", **MEMOIZED)
def linear_check(
    checkpoint: dict,
    preset: str,
    data: dict,
    weights_file: dict,
    later_scores: dict,
    sampler: dict,
    n_seqs: int,
    fractions: list[float],
) -> dict:
    """``induction_linear_check`` at ``checkpoint`` (``{"step", "path", "digest"}``: the
    digest keys the cache) along the weights in ``weights_file`` (``{"path", "digest"}``);
    ``{"heads", "rows", "n_seqs", "sampler"}``."""
    config = model_preset(preset)
    torch.set_num_threads(1)
    params = load_checkpoint(checkpoint["path"], expected_config=config).params
    heads = circuit_heads(later_scores)
    rows = induction_linear_check(
        params,
        config,
        load_lm_tokens(data, config).train,
        np.load(weights_file["path"]),
        heads,
        SamplerConfig.from_dict(sampler),
        n_seqs,
        fractions,
    )
    get_run_logger().info(
        "linear check at step %s: %s",
        checkpoint["step"],
        "; ".join(
            f"{r['component']} f={r['fraction']:g}: measured/two-run {r['ratio']:+.2f}, "
            f"measured/restricted {r['ratio_restricted']:+.2f}"
            for r in rows
        ),
    )
    return {"heads": heads, "rows": rows, "n_seqs": n_seqs, "sampler": sampler}
