"""Controls keep the dose and lose the direction."""

import numpy as np
import pytest
import xarray as xr

from patterning_core.estimators.decomposition import decompose
from patterning_core.estimators.feature_extrapolation import decile_ratio
from patterning_core.experiments.induction.controls import (
    cell_codes,
    class_neutral,
    class_neutral_at_ratio,
    random_mode_target,
    shuffle_within_classes,
)


def test_shuffle_keeps_class_totals_and_dose():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(30, 15))
    weights = rng.gamma(2.0, size=(30, 15))
    shuffled = shuffle_within_classes(weights, codes, seed=1)
    assert not np.array_equal(shuffled, weights)
    for code in range(4):
        mask = codes == code
        np.testing.assert_allclose(np.sort(shuffled[mask]), np.sort(weights[mask]))
    assert decile_ratio(shuffled) == pytest.approx(decile_ratio(weights))
    with pytest.raises(ValueError, match="differ in shape"):
        shuffle_within_classes(weights, codes[:, :3])


def test_random_target_lies_in_the_other_leading_modes():
    rng = np.random.default_rng(2)
    chi = xr.DataArray(rng.standard_normal((10, 200)), dims=("component", "unit"))
    chi = chi.assign_coords(component=[f"c{i}" for i in range(10)])
    modes = decompose(chi, by="none")
    target = random_mode_target(modes, induction_mode=2, n_leading=4, seed=0)
    loadings = modes["component_loading"].values
    assert np.linalg.norm(target) == pytest.approx(1.0)
    assert loadings[1] @ target == pytest.approx(0.0, abs=1e-12)  # mode 2 (index 1)
    in_span = loadings[[0, 2, 3]].T @ (loadings[[0, 2, 3]] @ target)
    np.testing.assert_allclose(in_span, target, atol=1e-12)


def test_cell_codes_split_each_class_by_sequence_kind_and_keep_cell_totals():
    classes = np.array([[0, 0, 1, 1], [2, 0, 1, 2], [1, 1, 0, 2]])
    codes = cell_codes(classes, n_synthetic=1)  # the last row is synthetic
    # 2·class, + 1 on natural text
    np.testing.assert_array_equal(codes, [[1, 1, 3, 3], [5, 1, 3, 5], [2, 2, 0, 4]])
    weights = np.arange(12, dtype=float).reshape(3, 4)
    shuffled = shuffle_within_classes(weights, codes, seed=3)
    for code in np.unique(codes):
        mask = codes == code
        assert shuffled[mask].sum() == pytest.approx(weights[mask].sum())
    with pytest.raises(ValueError, match="n_synthetic"):
        cell_codes(classes, n_synthetic=4)
    with pytest.raises(ValueError, match="N, T"):
        cell_codes(classes.ravel(), n_synthetic=0)


def test_class_neutral_leaves_every_class_at_mean_one_and_keeps_ratios_within_classes():
    codes = np.array([[0, 0, 1], [1, 1, 2]])
    weights = np.array([[1.0, 3.0, 2.0], [4.0, 6.0, 5.0]])
    out = class_neutral(weights, codes)
    # class 0: {1, 3} / 2; class 1: {2, 4, 6} / 4; class 2: {5} / 5
    np.testing.assert_allclose(out, [[0.5, 1.5, 0.5], [1.0, 1.5, 1.0]])
    squared = class_neutral(weights, codes, power=2.0)
    # class 0: {1, 9} / 5: the within-class ratio 3 becomes 9
    np.testing.assert_allclose(squared[0, :2], [0.2, 1.8])
    # any memory layout: the same answer for Fortran-ordered inputs
    np.testing.assert_allclose(class_neutral(np.asfortranarray(weights), codes), out)
    shuffled = shuffle_within_classes(out, codes, seed=3)
    for code in (0, 1, 2):
        assert shuffled[codes == code].mean() == pytest.approx(1.0)


def test_class_neutral_refuses_negative_weights_empty_classes_and_mismatched_shapes():
    with pytest.raises(ValueError, match=">= 0"):
        class_neutral(np.array([1.0, -0.5]), np.array([0, 0]))
    with pytest.raises(ValueError, match="weight 0 on every unit"):
        class_neutral(np.array([1.0, 0.0, 0.0]), np.array([0, 1, 1]))
    # a clipped weight of 0 stays 0, the rest of its class carries the mean
    np.testing.assert_allclose(class_neutral(np.array([0.0, 2.0]), np.array([0, 0])), [0, 2])
    with pytest.raises(ValueError, match="differ in shape"):
        class_neutral(np.ones(3), np.zeros(2))


def test_class_neutral_at_ratio_reaches_the_dose_it_is_asked_for():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(40, 25))
    weights = rng.gamma(4.0, size=(40, 25))
    out, power = class_neutral_at_ratio(weights, codes, 4.0)
    assert decile_ratio(out) == pytest.approx(4.0, rel=2e-3)
    np.testing.assert_allclose(out, class_neutral(weights, codes, power))
    with pytest.raises(ValueError, match="hardly"):
        class_neutral_at_ratio(np.where(codes == 0, 1.0, 2.0), codes, 4.0)
