"""One model of the outline fin experiment read as the reference is read.

The outline substrate's fin lives on the outline probe units of the restricted χ
(``docs/results/spacing/fin_outline/subsets``); every retrained model is read there the same
way, from its χ statistics held in memory (``sample_susceptibility_stats`` or
``read_stats``): the fin metric over 4- and 8-chain sets (``fin_chains``, restricted
estimator, beyond the model's own initialization), the fin mode of chains 0–7 against a
reference loading estimated on other chains, the share of the standardized χ along that
loading, and the counting losses of the model on held-out outline text (``counting``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from patterning_core.estimators.decomposition import standardize
from patterning_core.experiments.spacing import fin_chains
from patterning_core.experiments.spacing.counting import counting_losses
from patterning_core.experiments.spacing.fin_store import abs_cosine, fin_loading

__all__ = ["CONDITIONS", "outline_reading"]

SET_SIZES = (4, 8)
# The outline experiment's retrained conditions, in the order its reports list them: the
# recipe unweighted, the weights from the reference's fin mode and their same-share control,
# the same with the opposite sign, and the data edit that collapses runs of spaces.
CONDITIONS = (
    "baseline",
    "chi_suppress",
    "control_dose",
    "chi_amplify",
    "control_amplify",
    "collapse_whitespace",
)


def outline_reading(
    stats: xr.Dataset,
    init_stats: xr.Dataset | None,
    positions: np.ndarray,
    units: np.ndarray,
    reference_loading: np.ndarray | None,
    loss: np.ndarray,
    targets: dict[str, np.ndarray],
) -> dict:
    """The readings of one model (module docstring).

    ``stats``, ``init_stats``: χ statistics of the model and of its initialization (at
    least 8 chains, as many or more in the initialization's); ``positions`` ``[unit]``: run
    position of every probe unit; ``units``: boolean ``[unit]``, the outline probe units;
    ``reference_loading`` ``[outline unit]``: the reference's fin mode (unit loading) on
    chains disjoint from 0–7 (None for either: the readings that need it are None, e.g. for
    a model whose initialization's χ or reference was not estimated); ``loss``
    ``[B, T − 1]``: the model's per-token loss on held-out outline text with ``targets``
    (``counting.counting_targets``) of it.

    Returns ``metric_4``, ``partial_4``, ``found_again_4``, ``beyond_init_4``, ``null_4``
    (mean, sd over the 4-chain sets), ``metric_8`` and ``mode_8`` (chains 0–7),
    ``cosine_with_reference_mode``, ``share_along_reference_mode``, ``marker_loss``,
    ``space_loss_after_1_2``, ``space_loss_after_3_plus``, ``counting`` and ``sets`` (every
    set's row).
    """
    rows = fin_chains.fin_by_chain_count_of_stats(
        stats, positions, SET_SIZES, init_stats, units=units, estimator="restricted"
    )
    summary = {s["size"]: s for s in fin_chains.summarize(rows)}
    chi8, _ = fin_chains._chi(stats, range(8), units, None, "restricted")
    eight = next(r for r in rows if r["size"] == 8 and r["set"] == 0)
    x = standardize(chi8, "component").values
    losses = counting_losses(loss, targets)
    cosine = share = None
    if reference_loading is not None:
        cosine = abs_cosine(fin_loading(chi8, eight["mode"]), reference_loading)
        share = float(np.sum((x @ reference_loading) ** 2) / np.sum(x**2))
    return {
        "metric_4": summary[4]["metric"],
        "metric_8": eight["metric"],
        "partial_4": summary[4]["partial_metric"],
        "mode_8": int(eight["mode"]),
        "found_again_4": summary[4].get("agreement"),
        "beyond_init_4": summary[4].get("beyond_init"),
        "null_4": summary[4].get("init_beyond_init"),
        "cosine_with_reference_mode": cosine,
        "share_along_reference_mode": share,
        "marker_loss": losses["marker_all"],
        "space_loss_after_1_2": losses["space_after_1_2"],
        "space_loss_after_3_plus": losses["space_after_3_plus"],
        "counting": losses,
        "sets": rows,
    }
