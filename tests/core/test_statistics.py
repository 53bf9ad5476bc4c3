"""Rank p-values and Fisher's combination against answers worked by hand."""

from __future__ import annotations

import math

import pytest

from patterning_core.estimators.statistics import fisher_combined, rank_p_value


def test_rank_p_value_counts_ties_against_the_value():
    controls = [0.1, 0.5, 0.7, 0.7]
    assert rank_p_value(0.8, controls) == pytest.approx(1 / 5)  # above all: the floor
    assert rank_p_value(0.7, controls) == pytest.approx(3 / 5)  # ties count as reaching it
    assert rank_p_value(0.1, controls, greater=False) == pytest.approx(2 / 5)
    assert rank_p_value(0.0, controls, greater=False) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="at least one control"):
        rank_p_value(0.5, [])


def test_fisher_combined_known_answers():
    assert fisher_combined([0.3]) == pytest.approx(0.3)  # one p-value: itself
    # two at 0.05: x/2 = −ln 0.0025, tail of χ²_4 = e^(−x/2)(1 + x/2) = 0.0025(1 + 5.9915)
    assert fisher_combined([0.05, 0.05]) == pytest.approx(0.0025 * (1 - math.log(0.0025)))
    assert fisher_combined([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fisher_combined([0.0, 0.5])


def test_fisher_combined_matches_the_chi2_tail():
    stats = pytest.importorskip("scipy.stats")
    p = [1 / 21, 0.2, 0.6, 0.01]
    x = -2 * sum(math.log(v) for v in p)
    assert fisher_combined(p) == pytest.approx(stats.chi2.sf(x, 2 * len(p)), rel=1e-10)
