"""Per-unit susceptibilities χ (component × unit) by the two-run estimator (method.md §2).

For a component C (a named subset of the weights) and a data unit z,

    χ_z(φ_C) = −Cov[φ_C, ℓ_z − L]

estimated from two kinds of localized SGLD runs around the checkpoint w*:

1. a *restricted* run per component, in which only C's weights move; at every draw it
   records φ = L_fix(w) − L_fix(w*) (the mean loss on a fixed batch of training units,
   minus its value at w*) and the per-unit probe losses ℓ_z(w);
2. one *full* run, in which every weight moves; it supplies only the centring means
   E_full[L_fix] and E_full[ℓ_z].

    χ̂_z = E_C[φ·L_fix] − E_C[φ·ℓ_z] − E_C[φ]·(E_full[L_fix] − E_full[ℓ_z])

Conventions:
- No nβ factor in χ: the posterior mean responds as dμ = nβ·χ·dh (method.md §1).
- χ_z > 0: up-weighting unit z raises ⟨φ_C⟩, the component's localized loss. Negative
  values mean the component *expresses* the unit (read signs per component, after
  standardizing: the δ-localization scales each component's row by an unknown Z_C/Z).
- Units are the probe examples (``[B]`` losses) or the probe tokens flattened row-major
  from ``[B, T]`` losses: unit index = b·T + t.

Everything is accumulated as streaming per-chain statistics (``stats.py``), so memory does
not grow with draws and shards over chains or components merge into the same χ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from patterning_core.sampling.sgld import (
    ConfigError,
    DrawContext,
    LossFn,
    Run,
    SamplerConfig,
    as_data_tuple,
    check_loss_output,
    full_run,
    lane_seed,
    run_sgld,
    validate_masks,
)
from patterning_core.sampling.stats import (
    CoMomentAccumulator,
    MeanAccumulator,
    pool_comoments,
    pool_means,
)

__all__ = [
    "CHI_CONVENTION",
    "chi_from_stats",
    "estimate_susceptibilities",
    "group_components",
    "merge_stats",
    "restricted_chi_from_stats",
    "sample_susceptibility_stats",
]

CHI_CONVENTION = (
    "chi[component, unit] = -Cov[phi_C, l_z - L] by the two-run estimator "
    "E_C[phi L] - E_C[phi l_z] - E_C[phi] (E_full[L] - E_full[l_z]), "
    "phi = L_fix(w) - L_fix(w*); no n_beta factor (d<phi> = n_beta * chi * dh); "
    "chi > 0: up-weighting the unit raises the component's loss; rows carry a "
    "component-dependent scale, standardize per component before comparing components"
)


def _default_phi_batch(data: tuple[Tensor, ...], config: SamplerConfig) -> tuple[Tensor, ...]:
    """The fixed batch φ is measured on: all data (full batch), else a seeded subset."""
    n = data[0].shape[0]
    if config.batch_size is None or config.batch_size >= n:
        return data
    g = torch.Generator().manual_seed(lane_seed(config.seed, "phi-batch", 0, "select"))
    idx = torch.randperm(n, generator=g)[: config.batch_size].sort().values
    return tuple(t[idx.to(t.device)] for t in data)


def _joinable(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
    return len(a) == len(b) and all(
        x.shape[1:] == y.shape[1:] and x.dtype == y.dtype and x.device == y.device
        for x, y in zip(a, b, strict=True)
    )


def group_components(
    components: Mapping[str, Mapping[str, Tensor]], max_lanes: int | None, num_chains: int
) -> list[list[str]]:
    """Components whose moving parameters have the same names are stepped together.

    Returns lists of component names; each list is at most ``max_lanes // num_chains``
    long (no limit with ``max_lanes=None``).
    """
    groups: dict[frozenset[str], list[str]] = {}
    for name, masks in components.items():
        key = frozenset(k for k, m in masks.items() if bool(m.any()))
        groups.setdefault(key, []).append(name)
    per_group = None if max_lanes is None else max(1, max_lanes // num_chains)
    out = []
    for names in groups.values():
        step = per_group or len(names)
        out.extend(names[i : i + step] for i in range(0, len(names), step))
    return out


def sample_susceptibility_stats(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Tensor | Sequence[Tensor],
    probes: Tensor | Sequence[Tensor],
    components: Mapping[str, Mapping[str, Tensor]],
    config: SamplerConfig,
    *,
    component_names: Sequence[str] | None = None,
    include_full: bool = True,
    chain_ids: Sequence[int] | None = None,
    phi_batch: Tensor | Sequence[Tensor] | None = None,
    max_lanes: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Run the restricted runs (and the full run) and return their streaming statistics.

    This is one *shard* of a χ computation: any subset of components and chains. Shards
    combine with ``merge_stats`` and turn into χ with ``chi_from_stats``.

    Returns an ``xarray.Dataset`` with coordinates ``component``, ``chain``, ``unit``,
    ``draw`` (and ``sequence``/``position`` on ``unit`` for per-token probes) and variables
    (all float64):

    - ``count, phi_mean, phi_m2`` (component, chain): draws, mean of φ, Σ(φ − mean)²;
    - ``probe_mean, probe_comoment`` (component, chain, unit): mean of ℓ_z, Σ(φ − φ̄)(ℓ_z − ℓ̄_z);
    - ``loss_trace`` (component, chain, draw): L_fix at each draw (health plots);
    - with the full run: ``full_count, full_loss_mean`` (chain), ``full_probe_mean``
      (chain, unit), ``full_loss_trace`` (chain, draw).

    ``attrs``: ``init_loss`` (L_fix(w*)), ``n_beta``, ``sampler_config`` (JSON), ``convention``.
    """
    data = as_data_tuple(data)
    probes = as_data_tuple(probes, what="probes")
    params = {k: v.detach() for k, v in params.items()}
    if not components:
        raise ConfigError("components is empty: give at least one {name: {param: mask}}.")
    names = list(components) if component_names is None else list(component_names)
    if not names and not include_full:
        raise ConfigError("nothing to sample: no component_names and include_full=False.")
    unknown = [n for n in names if n not in components]
    if unknown:
        raise ConfigError(f"unknown component(s) {unknown}; known: {sorted(components)}.")
    masks = {n: validate_masks(params, components[n], where=f"component '{n}'") for n in names}
    chains = list(range(config.num_chains)) if chain_ids is None else list(chain_ids)
    fixed_batch = (
        _default_phi_batch(data, config)
        if phi_batch is None
        else as_data_tuple(phi_batch, what="phi_batch")
    )

    with torch.no_grad():
        init_fix_units = loss_fn(dict(params), fixed_batch)
        check_loss_output(init_fix_units, fixed_batch[0].shape[0])
        probe_units = loss_fn(dict(params), probes)
        check_loss_output(probe_units, probes[0].shape[0])
    init_loss = float(init_fix_units.double().mean())
    probe_shape = tuple(probe_units.shape)
    units = int(np.prod(probe_shape))

    joined = _joinable(fixed_batch, probes)
    eval_batch = (
        tuple(torch.cat([a, b]) for a, b in zip(fixed_batch, probes, strict=True))
        if joined
        else None
    )
    n_fix = fixed_batch[0].shape[0]

    def measure(ctx: DrawContext) -> tuple[Tensor, Tensor]:
        """``([lanes] L_fix, [lanes, units] probe losses)`` at the current draw."""
        if eval_batch is not None:
            out = ctx.evaluate(eval_batch)
            fix, probe = out[:, :n_fix], out[:, n_fix:]
        else:
            fix, probe = ctx.evaluate(fixed_batch), ctx.evaluate(probes)
        lanes = fix.shape[0]
        return fix.reshape(lanes, -1).double().mean(dim=1), probe.reshape(lanes, units)

    num_chains, draws = len(chains), config.num_draws
    device = next(iter(params.values())).device
    stats = {k: np.zeros((len(names), num_chains)) for k in ("count", "phi_mean", "phi_m2")}
    probe_mean = np.zeros((len(names), num_chains, units))
    probe_comoment = np.zeros((len(names), num_chains, units))
    loss_trace = np.zeros((len(names), num_chains, draws))

    for group in group_components({n: masks[n] for n in names}, max_lanes, num_chains):
        runs = [Run(n, masks[n]) for n in group]
        acc = CoMomentAccumulator(len(runs) * num_chains, units, device=device)
        trace = np.zeros((len(runs) * num_chains, draws))

        def record(ctx: DrawContext, acc=acc, trace=trace) -> None:
            fix, probe = measure(ctx)
            acc.update(fix - init_loss, probe)
            trace[:, ctx.draw] = fix.cpu().numpy()

        run_sgld(
            loss_fn,
            params,
            data,
            runs,
            config,
            on_draw=record,
            chain_ids=chains,
            progress=progress,
            desc=f"χ {group[0]}…" if len(group) > 1 else f"χ {group[0]}",
        )
        got = acc.numpy()
        rows = [names.index(n) for n in group]
        shape = (len(runs), num_chains)
        stats["count"][rows] = got["count"].reshape(shape)
        stats["phi_mean"][rows] = got["mean_phi"].reshape(shape)
        stats["phi_m2"][rows] = got["m2_phi"].reshape(shape)
        probe_mean[rows] = got["mean_x"].reshape(*shape, units)
        probe_comoment[rows] = got["comoment"].reshape(*shape, units)
        loss_trace[rows] = trace.reshape(*shape, draws)

    unit_coords: dict[str, tuple[str, np.ndarray]] = {}
    if len(probe_shape) == 2:
        seq, pos = np.meshgrid(np.arange(probe_shape[0]), np.arange(probe_shape[1]), indexing="ij")
        unit_coords = {"sequence": ("unit", seq.ravel()), "position": ("unit", pos.ravel())}
    ds = xr.Dataset(
        {
            "count": (("component", "chain"), stats["count"]),
            "phi_mean": (("component", "chain"), stats["phi_mean"]),
            "phi_m2": (("component", "chain"), stats["phi_m2"]),
            "probe_mean": (("component", "chain", "unit"), probe_mean),
            "probe_comoment": (("component", "chain", "unit"), probe_comoment),
            "loss_trace": (("component", "chain", "draw"), loss_trace),
        },
        coords={
            "component": names,
            "chain": chains,
            "unit": np.arange(units),
            "draw": np.arange(draws),
            **unit_coords,
        },
        attrs={
            "init_loss": init_loss,
            "n_beta": config.n_beta,
            "sampler_config": config.to_json(),
            "convention": CHI_CONVENTION,
            "probe_shape": list(probe_shape),
        },
    )
    if include_full:
        full_acc = MeanAccumulator(num_chains, units + 1, device=device)
        full_trace = np.zeros((num_chains, draws))

        def record_full(ctx: DrawContext) -> None:
            fix, probe = measure(ctx)
            full_acc.update(torch.cat([fix[:, None], probe.double()], dim=1))
            full_trace[:, ctx.draw] = fix.cpu().numpy()

        run_sgld(
            loss_fn,
            params,
            data,
            [full_run(params)],
            config,
            on_draw=record_full,
            chain_ids=chains,
            progress=progress,
            desc="χ full run",
        )
        means = full_acc.mean.cpu().numpy()
        ds["full_count"] = ("chain", full_acc.count.cpu().numpy())
        ds["full_loss_mean"] = ("chain", means[:, 0])
        ds["full_probe_mean"] = (("chain", "unit"), means[:, 1:])
        ds["full_loss_trace"] = (("chain", "draw"), full_trace)
    return ds


def merge_stats(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Combine shards (disjoint components and/or chains) into one statistics Dataset.

    Overlapping entries must agree exactly; a shard computed twice is harmless.
    """
    if not parts:
        raise ValueError("merge_stats needs at least one shard.")
    attrs = dict(parts[0].attrs)
    for p in parts[1:]:
        for key in ("init_loss", "n_beta", "sampler_config"):
            if p.attrs.get(key) != attrs.get(key):
                raise ValueError(
                    f"shards disagree on '{key}': {attrs.get(key)!r} vs {p.attrs.get(key)!r}; "
                    "they come from different checkpoints or sampler settings."
                )
    merged = xr.merge(
        list(parts), compat="no_conflicts", join="outer", combine_attrs="drop_conflicts"
    )
    merged.attrs = attrs
    return merged


def _require_complete(stats: xr.Dataset) -> None:
    if "full_count" not in stats:
        raise ValueError("the statistics hold no full run: merge in a shard with include_full.")
    missing = stats["count"].isnull() | (stats["count"] == 0)
    if bool(missing.any()):
        where = missing.where(missing, drop=True)
        raise ValueError(
            "statistics incomplete: no draws for (component, chain) "
            f"{list(zip(where.component.values, where.chain.values, strict=False))[:5]}…; "
            "compute the missing shards first."
        )


def chi_from_stats(stats: xr.Dataset, *, per_chain: bool = False) -> xr.DataArray:
    """χ (component × unit) from merged statistics (see the module docstring).

    With ``per_chain=True`` returns ``(component, chain, unit)``: chain c of each restricted
    run centred by chain c of the full run, independent replicates whose spread gives
    the standard error of the pooled estimate (std / √chains).
    """
    _require_complete(stats)
    init = float(stats.attrs["init_loss"])
    chain_axis = 1
    count = stats["count"].values
    args = (
        count,
        stats["phi_mean"].values,
        stats["phi_m2"].values,
        stats["probe_mean"].values,
        stats["probe_comoment"].values,
    )
    if per_chain:
        n, m_phi, m2, m_x, co = args
    else:
        n, m_phi, m2, m_x, co = pool_comoments(*args, axis=chain_axis)
    if per_chain:  # chain c of the restricted run is centred by chain c of the full run
        full_loss = stats["full_loss_mean"].values[None, :, None]
        full_probe = stats["full_probe_mean"].values[None]
    else:
        full_counts = stats["full_count"].values
        _, full_loss = pool_means(full_counts, stats["full_loss_mean"].values, axis=0)
        _, full_probe = pool_means(full_counts, stats["full_probe_mean"].values, axis=0)

    m_loss = m_phi + init
    e_phi_loss = m2 / n + m_phi * m_loss
    e_phi_probe = co / n[..., None] + m_phi[..., None] * m_x
    centring = full_loss - full_probe  # E_full[L_fix] − E_full[ℓ_z]
    chi = e_phi_loss[..., None] - e_phi_probe - m_phi[..., None] * centring

    dims = ("component", "chain", "unit") if per_chain else ("component", "unit")
    coords = {k: v for k, v in stats.coords.items() if set(v.dims) <= set(dims)}
    attrs = {k: stats.attrs[k] for k in ("n_beta", "sampler_config", "convention", "init_loss")}
    attrs["estimator"] = "two-run (restricted runs for products, full run for centring)"
    return xr.DataArray(chi, dims=dims, coords=coords, name="chi", attrs=attrs)


def restricted_chi_from_stats(stats: xr.Dataset, *, per_chain: bool = False) -> xr.DataArray:
    """χ^C_z = −Cov_C[φ, ℓ_z − L_fix] (component × unit) from the restricted runs alone:
    the exact first-order response of the restricted run's own mean ⟨φ⟩_C to re-weighting
    the data (fluctuation–dissipation for the law of C's weights with the rest clamped).

    The two-run χ (:func:`chi_from_stats`) instead centres by the full run's means; it is
    the response of the δ-localized observable δ(u − u*)·(L − L*) under the full posterior
    (up to Z_C/Z), and differs from this one by E_C[φ]·(E_C − E_full)[ℓ_z − L_fix], which
    includes how the re-weighting changes the posterior weight of u = u* itself.
    ``estimators.linear_response.two_run_linear_check`` measures both against the
    re-sampled restricted run. ``per_chain=True``: ``(component, chain, unit)``.
    """
    _require_complete(stats)
    args = (
        stats["count"].values,
        stats["phi_mean"].values,
        stats["phi_m2"].values,
        stats["probe_mean"].values,
        stats["probe_comoment"].values,
    )
    n, _, m2, _, co = args if per_chain else pool_comoments(*args, axis=1)
    chi = (m2 / n)[..., None] - co / n[..., None]
    dims = ("component", "chain", "unit") if per_chain else ("component", "unit")
    coords = {k: v for k, v in stats.coords.items() if set(v.dims) <= set(dims)}
    attrs = {k: stats.attrs[k] for k in ("n_beta", "sampler_config", "init_loss")}
    attrs["estimator"] = "restricted (single run: -Cov_C[phi, l_z - L_fix])"
    return xr.DataArray(chi, dims=dims, coords=coords, name="chi", attrs=attrs)


def estimate_susceptibilities(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Tensor | Sequence[Tensor],
    probes: Tensor | Sequence[Tensor],
    components: Mapping[str, Mapping[str, Tensor]],
    config: SamplerConfig,
    *,
    phi_batch: Tensor | Sequence[Tensor] | None = None,
    max_lanes: int | None = None,
    progress: bool | None = None,
) -> xr.DataArray:
    """Per-unit susceptibilities χ with dims ``("component", "unit")``.

    Args:
        loss_fn: ``loss_fn(params, batch) -> [B]`` or ``[B, T]`` per-unit losses.
        params: the checkpoint w*.
        data: training units the SGLD minibatches (and the fixed φ batch) come from.
        probes: the units z whose susceptibilities are wanted.
        components: ``{name: {param_name: bool mask}}``; one row of χ per component.
        config: sampler settings (one set for every component and checkpoint compared).
        phi_batch: the fixed batch φ is measured on (default: all of ``data`` with full
            batches, else a seeded subset of ``batch_size`` units).
        max_lanes: cap on lanes (component × chain) stepped together, to bound memory.
        progress: show progress bars (None: only on a terminal).

    Returns:
        ``xarray.DataArray`` named ``chi``; ``attrs`` hold the sampler config, nβ and the
        sign/scale convention (``CHI_CONVENTION``).
    """
    stats = sample_susceptibility_stats(
        loss_fn,
        params,
        data,
        probes,
        components,
        config,
        phi_batch=phi_batch,
        max_lanes=max_lanes,
        progress=progress,
    )
    return chi_from_stats(stats)
