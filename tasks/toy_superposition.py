"""Prefect tasks of the toy-superposition demonstration (``patterning_core/experiments/
toy_superposition``): each loads its inputs, makes one call into the core, and writes.

Unit of work and memoization. A seed trains in a few hundredths of a second when many
train together as one batched tensor, while a Prefect task run costs a tenth of a second
or more of orchestration; 100 seeds × 8 conditions as 800 task runs would spend minutes in
Prefect for seconds of arithmetic. So a task trains one *chunk* of seeds of one condition
(cached on its inputs and source, ``tasks/caching.py``), and inside it every seed is
memoized as its own file, ``$PATTERNING_HOME/toy_superposition/seeds/<digest of the setting
and the weights>/seed_<k>.json``: a killed run resumes seed by seed, and any chunking of
the same seeds reuses them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task
from safetensors.torch import load_file, save_file

from patterning_core.experiments.toy_superposition.after_retraining import retrained_chi
from patterning_core.experiments.toy_superposition.configuration import read_configuration
from patterning_core.experiments.toy_superposition.model import (
    ToyConfig,
    importances,
    make_dataset,
    per_sample_loss,
    train_seeds,
)
from patterning_core.experiments.toy_superposition.patterning import (
    chi_weights,
    control_weights,
    dose,
    llc_of_seed,
    loss_linear_response,
    loss_susceptibilities,
    naive_weights,
    norm_linear_response,
    norm_susceptibilities,
    unit_direction,
)
from patterning_core.experiments.toy_superposition.report import render_report
from patterning_core.sampling import SamplerConfig
from patterning_core.workspace import patterning_home, settings_digest
from tasks.caching import expensive_task_policy, result_storage

CACHED = {
    "cache_policy": expensive_task_policy(),
    "result_storage": result_storage(),
    "persist_result": True,
    "result_serializer": "json",
}


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)  # a killed write leaves no half file


def seed_folder(toy: dict[str, Any], weights: list[float] | None) -> Path:
    key = settings_digest({"toy": toy, "weights": weights})
    return patterning_home() / "toy_superposition" / "seeds" / key


@task(name="toy-train-seeds", **CACHED)
def train_chunk(
    toy: dict[str, Any], weights: list[float] | None, seeds: list[int], target: int
) -> list[dict[str, Any]]:
    """Train ``seeds`` with training weights ρ (None: uniform); one record per seed:
    ``{"seed", "W", "b", "loss", "configuration", "reached"}``."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**toy)
    folder = seed_folder(toy, weights)
    records: dict[int, dict[str, Any]] = {}
    for s in seeds:
        path = folder / f"seed_{s}.json"
        if path.is_file():
            records[s] = json.loads(path.read_text())
    missing = [s for s in seeds if s not in records]
    if missing:
        x = make_dataset(cfg)
        rho = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        W, b = train_seeds(cfg, x, missing, rho)
        losses = per_sample_loss(W, b, x, importances(cfg)).mean(-1)
        for k, s in enumerate(missing):
            conf = read_configuration(W[k].numpy(), cfg.threshold)
            record = {
                "seed": s,
                "W": W[k].tolist(),
                "b": b[k].tolist(),
                "loss": float(losses[k]),
                "configuration": conf.to_dict(),
                "reached": target in conf.represented,
            }
            _write_json(folder / f"seed_{s}.json", record)
            records[s] = record
    return [records[s] for s in seeds]


@task(name="toy-susceptibilities", **CACHED)
def susceptibilities(
    toy: dict[str, Any], chi_seeds: list[int], chi_step: int, sampler: dict, work_dir: str
) -> dict[str, Any]:
    """χ of the norms (two independent estimates: sampler seed s and s + 1) and of the
    localized column losses at step ``chi_step`` of ``chi_seeds``; files in ``work_dir``."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**toy)
    x = make_dataset(cfg)
    config = SamplerConfig.from_dict(sampler)
    W, b = train_seeds(cfg, x, chi_seeds, steps=chi_step)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    norm = norm_susceptibilities(cfg, x, W, b, config)
    check = norm_susceptibilities(cfg, x, W, b, config.replace(seed=config.seed + 1))
    loss = loss_susceptibilities(cfg, x, W, b, config)
    norm.chi.to_netcdf(out / "chi_norm.nc")
    norm.per_chain.to_netcdf(out / "chi_norm_per_chain.nc")
    check.chi.to_netcdf(out / "chi_norm_independent.nc")
    check.per_chain.to_netcdf(out / "chi_norm_independent_per_chain.nc")
    loss.to_netcdf(out / "chi_loss.nc")
    save_file(
        {"W": W.contiguous().clone(), "b": b.contiguous().clone()}, out / "checkpoint.safetensors"
    )
    trace = norm.norm_trace  # [chain, draw, feature]
    return {
        "chi_norm": str(out / "chi_norm.nc"),
        "chi_norm_per_chain": str(out / "chi_norm_per_chain.nc"),
        "chi_norm_independent": str(out / "chi_norm_independent.nc"),
        "chi_norm_independent_per_chain": str(out / "chi_norm_independent_per_chain.nc"),
        "chi_loss": str(out / "chi_loss.nc"),
        "checkpoint": str(out / "checkpoint.safetensors"),
        "checkpoint_norms": W.norm(dim=1).mean(0).tolist(),
        "trace_first_last": [trace[:, :10].mean(), trace[:, -10:].mean()],
    }


@task(name="toy-chi-after-retraining", **CACHED)
def chi_after_retraining(
    toy: dict[str, Any],
    weights: list[float] | None,
    chi_seeds: list[int],
    step: int,
    sampler: dict,
    out_file: str,
) -> dict[str, Any]:
    """Retrain the χ seeds ``step`` updates under ``weights`` and re-estimate χ of the norms
    there (``after_retraining.retrained_chi``); χ to ``out_file`` (NetCDF), and the small
    numbers returned: ``{"chi_norm": path, "posterior": [chain][feature], "seed_norms":
    [seed][feature]}``."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**toy)
    x = make_dataset(cfg)
    rho = None if weights is None else np.asarray(weights)
    result, seed_norms = retrained_chi(
        cfg, x, chi_seeds, rho, step, SamplerConfig.from_dict(sampler)
    )
    path = Path(out_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.chi.to_netcdf(path)
    return {
        "chi_norm": str(path),
        "posterior": result.norm_trace.mean(axis=1).tolist(),
        "seed_norms": seed_norms.tolist(),
    }


@task(name="toy-weights")
def intervention_weights(
    toy: dict[str, Any], chi_norm: str, target: int, alphas: list[float], control_seed: int
) -> dict[str, Any]:
    """The χ, control and naive weights at every α: ``{"dh", "conditions": {name: {"alpha",
    "dose", "weights"}}}`` with names ``chi@α``, ``control@α``, ``naive@α``."""
    import xarray as xr

    cfg = ToyConfig(**toy)
    x = make_dataset(cfg)
    chi = xr.load_dataarray(chi_norm)
    active = (x[:, target] > 0).numpy()
    conditions: dict[str, Any] = {}
    dh = None
    for alpha in alphas:
        dh, rho = chi_weights(chi, {f"norm{target}": 1.0}, chi.attrs["n_beta"], alpha)
        d = dose(rho)
        for name, w in (
            ("chi", rho),
            ("control", control_weights(rho, control_seed)),
            ("naive", naive_weights(active, d)),
        ):
            conditions[f"{name}@{alpha:g}"] = {
                "alpha": alpha,
                "dose": dose(w),
                "max_weight": float(w.max()),
                "zero_weights": int((w == 0).sum()),
                "weights": [float(v) for v in w],
            }
    assert dh is not None
    return {"dh": [float(v) for v in dh], "conditions": conditions}


@task(name="toy-linear-response", **CACHED)
def linear_response(
    toy: dict[str, Any],
    paths: dict[str, str],
    dh: list[float],
    target: int,
    alphas: list[float],
    sampler: dict,
) -> dict[str, Any]:
    """Predicted against measured change of ⟨norm_target⟩ and of the target column's
    localized loss under SGLD with the re-weighted loss, over α."""
    import xarray as xr

    torch.set_num_threads(1)
    cfg = ToyConfig(**toy)
    x = make_dataset(cfg)
    ckpt = load_file(paths["checkpoint"])  # safetensors: tensors only, never a pickle
    config = SamplerConfig.from_dict(sampler)
    chi = xr.load_dataarray(paths["chi_norm"]).values[target]
    independent = xr.load_dataarray(paths["chi_norm_independent"]).values[target]
    independent_chains = xr.load_dataarray(paths["chi_norm_independent_per_chain"])
    independent_chains = independent_chains.values[target]  # [chain, unit]
    loss_chi = xr.load_dataset(paths["chi_loss"])["restricted"].values[target]
    direction = np.asarray(dh)
    norm_points = norm_linear_response(
        cfg, x, ckpt["W"], ckpt["b"], chi, direction, target, alphas, config
    )
    loss_points = loss_linear_response(
        cfg, x, ckpt["W"], ckpt["b"], loss_chi, direction, target, alphas, config
    )
    centred = unit_direction(direction)
    n = len(direction)
    rows = []
    for p, q in zip(norm_points, loss_points, strict=True):
        rho_minus_one = p.alpha * centred
        per_chain = config.n_beta * (independent_chains @ rho_minus_one) / n
        rows.append(
            {
                "alpha": p.alpha,
                "predicted": p.predicted,
                "predicted_independent": config.n_beta * float(independent @ rho_minus_one) / n,
                "predicted_independent_se": float(per_chain.std(ddof=1) / np.sqrt(len(per_chain))),
                "measured": p.measured,
                "measured_se": p.measured_se,
                "loss_predicted": q.predicted,
                "loss_measured": q.measured,
                "loss_measured_se": q.measured_se,
            }
        )
    return {"points": rows}


@task(name="toy-llc", **CACHED)
def configuration_llcs(
    toy: dict[str, Any], records: list[dict[str, Any]], per_configuration: int, sampler: dict
) -> list[dict[str, Any]]:
    """λ̂ of up to ``per_configuration`` seeds of each of the three commonest
    configurations among ``records``."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**toy)
    x = make_dataset(cfg)
    config = SamplerConfig.from_dict(sampler)
    labels = Counter(r["configuration"]["label"] for r in records)
    rows = []
    for label, count in labels.most_common(3):
        chosen = [r for r in records if r["configuration"]["label"] == label][:per_configuration]
        values = []
        for r in chosen:
            mean, std, rhat = llc_of_seed(
                cfg, x, torch.tensor(r["W"]), torch.tensor(r["b"]), config
            )
            values.append({"seed": r["seed"], "llc": mean, "std": std, "rhat": rhat})
        rows.append(
            {
                "configuration": label,
                "seeds_with_it": count,
                "llc_mean": float(np.mean([v["llc"] for v in values])),
                "estimates": values,
            }
        )
    return rows


# ----------------------------------------------------------------------------- report


@task(name="toy-report")
def write_report(out_dir: str, numbers: dict[str, Any], runs: dict[str, list[dict]]) -> dict:
    """``report.md``, ``results.json`` and the plots in ``out_dir``; returns their paths."""
    return render_report(out_dir, numbers, runs)
