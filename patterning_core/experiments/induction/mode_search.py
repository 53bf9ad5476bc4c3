"""The induction mode, found rather than assumed (natural-text demonstration).

Among the leading modes of standardized χ (``estimators.decomposition.decompose``: χ =
U Σ Vᵀ, component loadings u_k, unit loadings v_k) the induction mode is one whose

- *head loadings* follow the heads' later circuit scores: |cos(u_k, s − mean s)| over the
  heads (``decomposition.mode_alignment``), where s is layer-1 prefix matching plus layer-0
  previous-token score at a checkpoint after formation;
- *token loadings* follow the induction-predictable tokens: the point-biserial correlation
  r_k = corr(v_k, 1[unit is predictable]) over the probe units.

Orientation: a mode is reported with the sign that makes its head alignment positive (its
component loadings then point towards the circuit), and ``token_correlation`` is read in
that orientation.

Reproducibility (:func:`mode_agreement`, :func:`chain_sign_agreement`): the |cos| of the
component loadings of the mode found with two SGLD seeds, and in how many chains the
chain's own χ, projected on the mode's unit loadings, has a component pattern with positive
cosine to the mode's (the mode's sign holds in that chain).

Ceiling (:func:`token_ceiling`): how well *any* fixed combination of the standardized χ rows
follows the predictable tokens, fitted on half of the probe sequences and read on the other
half. A mode's token loadings are one such combination (up to scale), so when this held-out r
is below ``min_correlation`` no mode of this χ can pass the token test, whatever the search.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import mode_alignment, standardize
from patterning_core.estimators.feature_extrapolation import feature_scaling, sequence_halves


def point_biserial(loadings: np.ndarray, indicator: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``loadings [modes, units]`` with the 0/1
    ``indicator [units]`` (the point-biserial r); 0 for a constant row or indicator."""
    x = np.asarray(loadings, dtype=np.float64)
    y = np.asarray(indicator, dtype=np.float64)
    if x.shape[-1] != y.shape[0]:
        raise ValueError(f"loadings over {x.shape[-1]} units, indicator over {y.shape[0]}.")
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean()
    denom = np.linalg.norm(xc, axis=-1) * np.linalg.norm(yc)
    return np.where(denom > 0, xc @ yc / np.where(denom > 0, denom, 1.0), 0.0)


def mode_table(
    modes: xr.Dataset,
    head_scores: Mapping[str, float],
    predictable: np.ndarray,
    n_leading: int = 8,
) -> list[dict]:
    """One row per leading mode: ``mode``, ``explained_variance``, ``head_alignment``
    (≥ 0 after orienting), ``token_correlation`` (in that orientation), ``sign`` (the flip
    applied to the decomposition's sign convention)."""
    k = min(n_leading, modes.sizes["mode"])
    lead = modes.isel(mode=slice(0, k))
    alignment = mode_alignment(lead, dict(head_scores)).values
    signs = np.where(alignment < 0, -1.0, 1.0)
    r = point_biserial(lead["unit_loading"].values, predictable) * signs
    return [
        {
            "mode": int(lead.mode.values[i]),
            "explained_variance": float(lead["explained_variance"].values[i]),
            "head_alignment": float(abs(alignment[i])),
            "token_correlation": float(r[i]),
            "sign": float(signs[i]),
        }
        for i in range(k)
    ]


def subset_token_correlations(
    modes: xr.Dataset, table: list[dict], predictable: np.ndarray, subsets: Mapping[str, np.ndarray]
) -> list[dict]:
    """Each row of :func:`mode_table` with ``token_correlation_<name>`` added for every
    ``subsets[name]`` (bool over units): the same point-biserial r, in the row's orientation,
    over those units only (e.g. natural and synthetic probe sequences apart, since a mode
    that merely separates the synthetic sequences, where most tokens are predictable, would
    correlate with the indicator over all units)."""
    out = []
    for row in table:
        loading = modes["unit_loading"].sel(mode=row["mode"]).values * row["sign"]
        extra = {
            f"token_correlation_{name}": float(
                point_biserial(loading[None, mask], np.asarray(predictable)[mask])[0]
            )
            for name, mask in subsets.items()
        }
        out.append({**row, **extra})
    return out


def find_induction_mode(
    modes: xr.Dataset,
    head_scores: Mapping[str, float],
    predictable: np.ndarray,
    *,
    n_leading: int = 8,
    min_alignment: float = 0.8,
    min_correlation: float = 0.3,
) -> dict:
    """The induction mode among the ``n_leading`` modes (module doc).

    Returns the chosen row of :func:`mode_table` plus ``found`` (both thresholds met) and
    ``table`` (every leading mode). Among the modes meeting both thresholds the one with the
    largest head alignment wins; if none does, the mode with the largest
    min(alignment/min_alignment, |r|/min_correlation), with ``found`` False, so that a
    report can say by how much the best candidate missed.
    """
    table = mode_table(modes, head_scores, predictable, n_leading)
    passing = [
        row
        for row in table
        if row["head_alignment"] >= min_alignment
        and abs(row["token_correlation"]) >= min_correlation
    ]
    if passing:
        best = max(passing, key=lambda row: row["head_alignment"])
    else:
        best = max(
            table,
            key=lambda row: min(
                row["head_alignment"] / min_alignment,
                abs(row["token_correlation"]) / min_correlation,
            ),
        )
    return {**best, "found": bool(passing), "table": table}


def oriented_loadings(modes: xr.Dataset, mode: int, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """``(component_loading [components], unit_loading [units])`` of ``mode`` times ``sign``."""
    sel = modes.sel(mode=mode)
    return sign * sel["component_loading"].values, sign * sel["unit_loading"].values


def mode_agreement(modes_a: xr.Dataset, mode_a: int, modes_b: xr.Dataset, mode_b: int) -> float:
    """|cos| of two modes' component loadings over the components both decompositions have
    (e.g. the mode found with two SGLD seeds)."""
    names = [
        c
        for c in map(str, modes_a.component.values)
        if c in set(map(str, modes_b.component.values))
    ]
    if not names:
        raise ValueError("the two decompositions share no component.")
    a = modes_a["component_loading"].sel(mode=mode_a, component=names).values
    b = modes_b["component_loading"].sel(mode=mode_b, component=names).values
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def chain_sign_agreement(
    chi_per_chain: xr.DataArray, modes: xr.Dataset, mode: int, sign: float = 1.0
) -> tuple[int, list[float]]:
    """In how many chains the mode's sign holds, and the per-chain cosines.

    ``chi_per_chain (component, chain, unit)`` (``chi_from_stats(..., per_chain=True)``) is
    standardized per chain as the pooled χ was (``modes.attrs["standardized_by"]``), projected
    on the mode's unit loading v, and the resulting component pattern Z_c·v compared with the
    mode's component loading u: cos > 0 means the chain's χ carries the mode with its sign.
    """
    u, v = oriented_loadings(modes, mode, sign)
    by = modes.attrs.get("standardized_by", "component")
    components = [str(c) for c in modes.component.values]
    cosines = []
    if "unit" in chi_per_chain.coords and "unit" in modes.coords:
        chi_per_chain = chi_per_chain.sel(unit=modes.unit.values)
    for c in chi_per_chain.chain.values:
        z = standardize(chi_per_chain.sel(chain=c), by).sel(component=components)
        z = z.transpose("component", "unit").values
        pattern = z @ v
        denom = np.linalg.norm(pattern) * np.linalg.norm(u)
        cosines.append(float(pattern @ u / denom) if denom > 0 else 0.0)
    return int(sum(x > 0 for x in cosines)), cosines


def token_ceiling(
    chi: xr.DataArray,
    indicator: np.ndarray,
    groups: np.ndarray,
    *,
    by: str = "component",
    seed: int = 0,
) -> dict:
    """The best token correlation any combination of χ's rows reaches on held-out units.

    ``chi (component, unit)`` is standardized as the mode search does (``standardize(chi,
    by)``); the ``indicator [units]`` (0/1, or any per-unit score) is regressed (least
    squares, with an intercept) on the standardized rows over one half of the ``groups
    [units]`` (each unit's probe sequence: units of one sequence are not independent, so
    they stay in one half; the extrapolator's halves, ``sequence_halves(groups, seed)``), and
    the fitted combination is correlated with the indicator over the other half; both ways
    round. Returns ``heldout_r`` (mean of the two folds), ``folds`` (each held-out
    r), ``in_sample_r`` (the fit on all units; ≥ every mode's |r|, but inflated by fitting)
    and ``weights`` ``{component: coefficient}`` of the all-unit fit.

    Known answer: rows z_c = b_c·t + e_c with independent noise of variance σ² give, for
    many units, r = 1 / sqrt(1 + σ² / (|b|²·p(1 − p))) where p is the indicator's mean.
    """
    z = standardize(chi, by).transpose("component", "unit").values.T  # [units, components]
    y = np.asarray(indicator, dtype=np.float64)
    g = np.asarray(groups)
    if z.shape[0] != y.shape[0] or g.shape[0] != y.shape[0]:
        raise ValueError(
            f"χ over {z.shape[0]} units, indicator over {y.shape[0]}, groups over {g.shape[0]}."
        )
    first, _ = sequence_halves(g, seed)
    design = np.column_stack([np.ones(len(y)), z])

    def fit(mask: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(design[mask], y[mask], rcond=None)[0]

    folds = []
    for train in (first, ~first):
        pred = design[~train] @ fit(train)
        folds.append(float(point_biserial(pred[None, :], y[~train])[0]))
    coef = fit(np.ones(len(y), dtype=bool))
    in_sample = float(point_biserial((design @ coef)[None, :], y)[0])
    components = [str(c) for c in chi.component.values]
    return {
        "heldout_r": float(np.mean(folds)),
        "folds": folds,
        "in_sample_r": in_sample,
        "weights": dict(zip(components, map(float, coef[1:]), strict=True)),
    }


def feature_span_modes(
    chi: xr.DataArray,
    features: np.ndarray,
    head_scores: Mapping[str, float],
    indicator: np.ndarray,
    *,
    n_leading: int = 6,
    n_null: int = 200,
    seed: int = 0,
) -> dict:
    """The modes of the part of χ that weights built from per-unit features can act on, and
    how often χ decoupled from the features gives modes as good.

    Weights for training tokens are functions of the features (the extrapolator), so their
    response nβ·χ̃·dh only sees χ̃'s projection on the span of the features over the probe
    units. With ``Q [units, F']`` an orthonormal basis of span{1, ``features [units, F]``}
    (standardized), the SVD ``χ̃ Q = U Σ Wᵀ`` gives component loadings ``U`` and unit
    loadings ``Q W`` (which lie in the span); the table rows are read like
    :func:`mode_table`'s (alignment oriented ≥ 0, ``token_correlation`` in that orientation;
    ``explained_variance`` as a share of all of χ̃'s variance).

    Token correlations inside a span that holds the indicator's own feature are large by
    construction, so each is set against a null: the same decomposition of χ̃ with its
    units permuted (``n_null`` seeded draws: χ and the features each keep their structure,
    their coupling is gone). Returned: ``table`` (:func:`mode_table`'s rows), ``best`` (the
    row :func:`find_induction_mode` picks, with its thresholds; ``found``: both met), and under
    ``null`` the 95 % quantiles of the best |alignment| and of the best |r| among the
    leading modes, and ``p_joint``: the share of null draws (counting the observed one) in
    which some mode reaches both the candidate's alignment and its |r|.
    """
    z = standardize(chi, "component").transpose("component", "unit")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(indicator, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != z.sizes["unit"] or y.shape[0] != z.sizes["unit"]:
        raise ValueError(
            f"χ over {z.sizes['unit']} units; features {x.shape} and indicator {y.shape} "
            "must have one row per unit."
        )
    mean, scale = feature_scaling(x)
    basis, _ = np.linalg.qr(np.column_stack([np.ones(len(x)), (x - mean) / scale]))
    k = min(n_leading, z.sizes["component"], basis.shape[1])
    total = float((z.values**2).sum())

    def span_modes(matrix: np.ndarray) -> xr.Dataset:
        """The projection's SVD as ``decompose`` lays modes out."""
        u, s, wt = np.linalg.svd(matrix @ basis, full_matrices=False)
        return xr.Dataset(
            {
                "explained_variance": ("mode", s[:k] ** 2 / total if total > 0 else s[:k] * 0),
                "component_loading": (("mode", "component"), u[:, :k].T),
                "unit_loading": (("mode", "unit"), wt[:k] @ basis.T),
            },
            coords={"mode": np.arange(1, k + 1), "component": z.component.values},
        )

    found = find_induction_mode(span_modes(z.values), head_scores, y, n_leading=k)
    table = found.pop("table")
    best = {key: found[key] for key in table[0]}
    rng = np.random.default_rng(seed)
    null_alignment, null_r, joint = [], [], 1  # the observed χ counts as one draw
    for _ in range(n_null):
        rows = mode_table(
            span_modes(z.values[:, rng.permutation(z.sizes["unit"])]), head_scores, y, k
        )
        a = np.array([row["head_alignment"] for row in rows])
        r = np.abs([row["token_correlation"] for row in rows])
        null_alignment.append(a.max())
        null_r.append(r.max())
        joint += bool(((a >= best["head_alignment"]) & (r >= abs(best["token_correlation"]))).any())
    return {
        "table": table,
        "best": best,
        "found": found["found"],
        "null": {
            "draws": n_null,
            "alignment_q95": float(np.quantile(null_alignment, 0.95)),
            "token_r_q95": float(np.quantile(null_r, 0.95)),
            "p_joint": joint / (n_null + 1),
        },
    }
