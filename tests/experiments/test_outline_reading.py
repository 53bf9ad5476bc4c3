"""One model of the outline fin experiment read from statistics in memory
(``experiments/spacing/outline_reading.py``): its numbers are the fin readings' and the
counting readout's, and the reference-mode comparisons have known answers when the
reference loading is the model's own fin mode."""

from __future__ import annotations

import numpy as np
import pytest

from patterning_core.estimators.decomposition import standardize
from patterning_core.experiments.spacing import fin_chains
from patterning_core.experiments.spacing.counting import counting_losses, counting_targets
from patterning_core.experiments.spacing.fin_store import fin_loading
from patterning_core.experiments.spacing.outline_reading import outline_reading
from tests.chi_stores import COMPONENTS, CONFIG, shard_stats
from tests.experiments.test_spacing_counting import NL, SP, STRINGS, marker

UNITS = 400


def eight_chains(seed: int):
    stats = shard_stats(COMPONENTS, list(range(8)), UNITS, seed=seed)
    stats.attrs |= {"n_beta": CONFIG.n_beta, "sampler_config": CONFIG.to_json(), "convention": ""}
    return stats


def test_outline_reading_is_the_fin_and_counting_readings_of_the_model():
    stats, init = eight_chains(1), eight_chains(2)
    rng = np.random.default_rng(0)
    positions = np.where(rng.random(UNITS) < 0.6, rng.integers(1, 9, UNITS), np.nan)
    units = np.arange(UNITS) >= 100  # the "outline" units: all but the first hundred
    chi8, _ = fin_chains._chi(stats, range(8), units, None, "restricted")
    rows = fin_chains.fin_by_chain_count_of_stats(
        stats, positions, [4, 8], init, units=units, estimator="restricted"
    )
    mode = next(r for r in rows if r["size"] == 8)["mode"]
    own = fin_loading(chi8, mode)  # the model's own fin mode as the reference's
    text = np.array([[NL, SP, SP, SP, SP, marker(4), NL, SP, marker(1)]])
    targets = counting_targets(text, STRINGS)
    loss = rng.random((1, text.shape[1] - 1))

    got = outline_reading(stats, init, positions, units, own, loss, targets)

    summary = {s["size"]: s for s in fin_chains.summarize(rows)}
    assert (
        got["metric_4"] == summary[4]["metric"] and got["null_4"] == summary[4]["init_beyond_init"]
    )
    assert got["mode_8"] == mode and got["sets"] == rows
    assert got["cosine_with_reference_mode"] == pytest.approx(1.0, abs=1e-12)
    # the share of the standardized χ along its own k-th unit loading is s_k² / Σ s²
    s = np.linalg.svd(standardize(chi8, "component").values, compute_uv=False)
    assert got["share_along_reference_mode"] == pytest.approx(s[mode - 1] ** 2 / np.sum(s**2))
    expected = counting_losses(loss, targets)
    assert got["counting"] == expected and got["marker_loss"] == expected["marker_all"]
    assert got["space_loss_after_3_plus"] == expected["space_after_3_plus"]


def test_outline_reading_without_initialization_or_reference_leaves_those_readings_empty():
    """A model whose initialization's χ and reference mode are not at hand: the readings of
    the model alone are unchanged, the ones that compare are None."""
    stats, init = eight_chains(1), eight_chains(2)
    rng = np.random.default_rng(0)
    positions = np.where(rng.random(UNITS) < 0.6, rng.integers(1, 9, UNITS), np.nan)
    units = np.arange(UNITS) >= 100
    text = np.array([[NL, SP, SP, SP, marker(3), NL, SP, marker(1)]])
    targets = counting_targets(text, STRINGS)
    loss = rng.random((1, text.shape[1] - 1))
    own = np.ones(int(units.sum())) / np.sqrt(units.sum())

    full = outline_reading(stats, init, positions, units, own, loss, targets)
    alone = outline_reading(stats, None, positions, units, None, loss, targets)

    for key in ("metric_4", "partial_4", "metric_8", "mode_8", "found_again_4", "marker_loss"):
        assert alone[key] == full[key]
    assert full["beyond_init_4"] is not None and full["null_4"] is not None
    assert alone["beyond_init_4"] is None and alone["null_4"] is None
    assert alone["cosine_with_reference_mode"] is None
    assert alone["share_along_reference_mode"] is None
