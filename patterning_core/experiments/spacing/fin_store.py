"""The fin read off a χ store the pipeline wrote: the probe tokens rebuilt from the store's
workload, the modes of a checkpoint's standardized χ, and the fin metric (``fin``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from torch import Tensor

from patterning_core.data.lm_data import load_lm_tokens, workload_probes
from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.susceptibility import chi_from_stats, restricted_chi_from_stats
from patterning_core.experiments.spacing.fin import fin_metric, position_decoding, run_positions
from patterning_core.model.transformer import TransformerConfig
from patterning_core.store.chi_store import chi_at, open_chi, read_stats

__all__ = [
    "N_MODES",
    "abs_cosine",
    "check_same_workload",
    "chi_of_chains",
    "fin_at",
    "fin_inputs",
    "fin_loading",
    "found_again",
    "probe_tokens",
    "read_fin",
]

N_MODES = 8  # leading modes searched for the fin


def probe_tokens(workload: dict, config: TransformerConfig) -> tuple[Tensor, list[str]]:
    """The probe sequences ``[P, T]`` of a transformer workload (as ``store.workloads``
    selects them: ``probe_seqs`` validation sequences, seed ``probe_seed``, then any
    ``probe_outline`` and ``probe_synthetic`` sequences) and the token strings."""
    tokens = load_lm_tokens(workload["data"], config)
    probes = workload_probes(tokens.val, workload, config.d_vocab, tokens.tokenizer)
    return probes, tokens.token_strings


def fin_inputs(
    store: str | Path, step: int, config: TransformerConfig
) -> tuple[xr.DataArray, np.ndarray, np.ndarray, xr.Dataset]:
    """What the fin readings take from checkpoint ``step`` of ``store``: χ ``[component,
    unit]`` (raw, as stored), each unit's run position ``[unit]`` (``fin.run_positions``,
    NaN outside runs), its posterior mean loss E[ℓ_z] ``[unit]`` (the full run's
    ``full_probe_mean``, averaged over chains) and the store's dataset."""
    chi, _, ds = chi_at(store, step)
    probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
    positions = run_positions(probes, strings).ravel()
    if positions.size != chi.sizes["unit"]:
        raise ValueError(
            f"{chi.sizes['unit']} χ units but {positions.size} probe units were rebuilt: the "
            "store's data or probes changed since χ was written."
        )
    loss = ds["full_probe_mean"].sel(checkpoint=step).values.mean(axis=0)
    return chi.transpose("component", "unit"), positions, loss, ds


def read_fin(
    chi: xr.DataArray,
    positions: np.ndarray,
    loss: np.ndarray,
    init_standardized: np.ndarray | None = None,
) -> dict:
    """The fin readings of one χ estimate ``(component, unit)``: :func:`fin.fin_metric` over
    the leading ``N_MODES`` modes of its per-component standardized form, controlled for
    ``loss`` ``[unit]``, with ``decoding`` (:func:`fin.position_decoding`, beyond the
    initialization when ``init_standardized`` ``[component', unit]`` is given) and
    ``explained_variance`` of the fin mode."""
    modes = decompose(chi, "component", N_MODES)
    fin = fin_metric(modes["unit_loading"], positions, control=loss)
    standardized = standardize(chi, "component").values
    fin["decoding"] = position_decoding(standardized, positions, loss, baseline=init_standardized)
    fin["explained_variance"] = float(modes["explained_variance"].sel(mode=fin["mode"]))
    return fin


ESTIMATORS = {"two_run": chi_from_stats, "restricted": restricted_chi_from_stats}


def chi_of_chains(
    stats: xr.Dataset, chains: Sequence[int], estimator: str = "two_run"
) -> tuple[xr.DataArray, np.ndarray]:
    """χ ``(component, unit)`` of the chains at positions ``chains`` of ``stats`` (pooled as
    :func:`chi_from_stats` pools all of them; ``estimator="restricted"``: the restricted
    runs alone, :func:`restricted_chi_from_stats`, without the full run's rank-1 centring
    term) and those chains' posterior mean probe loss ``[unit]`` (the full run's
    ``full_probe_mean``, count-weighted)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r}: use one of {sorted(ESTIMATORS)}.")
    subset = stats.isel(chain=list(chains))
    chi = ESTIMATORS[estimator](subset).transpose("component", "unit")
    counts = subset["full_count"].values.astype(np.float64)
    loss = (counts[:, None] * subset["full_probe_mean"].values).sum(axis=0) / counts.sum()
    return chi, loss


def abs_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """|cos| between two loading vectors (their signs are arbitrary)."""
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_same_workload(store: str | Path, init: tuple[str | Path, int]) -> None:
    """χ of the initialization ``init = (store, step)`` must come from ``store``'s data and
    probes; otherwise a ``ValueError`` naming the fix."""
    if open_chi(init[0]).attrs["workload"] != open_chi(store).attrs["workload"]:
        raise ValueError(
            f"χ of the initialization ({init[0]}) was estimated on another workload than "
            f"{store}: estimate both on the same data and probes."
        )


def fin_loading(chi: xr.DataArray, mode: int) -> np.ndarray:
    """Unit loadings ``[unit]`` of mode ``mode`` of ``chi``'s standardized decomposition."""
    return decompose(chi, "component", N_MODES)["unit_loading"].sel(mode=mode).values


def found_again(stats: xr.Dataset, positions: np.ndarray) -> dict | None:
    """Is the fin mode found again by an independent estimate? The chains split into two
    halves, each half's χ read as its own estimate: ``{"agreement"}`` is |cos| between the
    unit loadings of the two halves' fin modes (1: the same direction; about 1/√units for
    unrelated ones), with each half's ``metrics`` and ``modes``. None with fewer than 2 or
    an odd number of chains."""
    n = stats.sizes["chain"]
    if n < 2 or n % 2:
        return None
    metrics, modes, loadings = [], [], []
    for half in (range(n // 2), range(n // 2, n)):
        chi, _ = chi_of_chains(stats, half)
        modes_of = decompose(chi, "component", N_MODES)
        fin = fin_metric(modes_of["unit_loading"], positions)
        metrics.append(fin["metric"])
        modes.append(fin["mode"])
        loadings.append(modes_of["unit_loading"].sel(mode=fin["mode"]).values)
    return {
        "agreement": abs_cosine(*loadings),
        "metrics": metrics,
        "modes": modes,
        "chains_per_half": n // 2,
    }


def fin_at(
    store: str | Path,
    step: int,
    config: TransformerConfig,
    init: tuple[str | Path, int] | None = None,
) -> dict:
    """The fin of checkpoint ``step`` of ``store``: :func:`fin.fin_metric` over the leading
    ``N_MODES`` modes, controlled for each unit's posterior mean loss (the full run's
    ``full_probe_mean``, averaged over chains), plus ``explained_variance`` of the fin mode,
    ``n_beta``, ``probe_units``, ``found_again`` (:func:`found_again`: the fin mode of one
    half of the chains against that of the other) and ``decoding``
    (:func:`fin.position_decoding`: run position from the χ directions beyond the loss and,
    with ``init`` = ``(store, step)`` of χ of the model's initialization on the same
    workload, beyond the initialization)."""
    chi, positions, loss, ds = fin_inputs(store, step, config)
    baseline = None
    if init is not None:
        check_same_workload(store, init)
        init_chi, _, _ = chi_at(*init)
        baseline = standardize(init_chi.transpose("component", "unit"), "component").values
    fin = read_fin(chi, positions, loss, baseline)
    fin["found_again"] = found_again(read_stats(store, step), positions)
    fin["n_beta"] = float(ds.attrs["n_beta"])
    fin["probe_units"] = int(positions.size)
    fin["step"] = int(step)
    return fin
