"""The spacing experiment's further mode: the class separation, the rule's pick, the amplify
weights and the outcome's reading, each on constructed inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.estimators.decomposition import decompose
from patterning_core.experiments.induction.loop import predicted_shift
from patterning_core.experiments.spacing.further_mode import (
    SPACE_RUN,
    class_labels,
    class_loss,
    class_separation,
    further_mode_weights,
    outcome,
    pick_further_mode,
    sampler_noise,
    separation_of,
)

# ids: 0 eot, 1 space, 2 newline, 3 "def" (word), 4 "x" (word), 5 "(" (bracket), 6 ")"
STRINGS = ["<eot>", " ", "\n", "def", "x", "(", ")"]
ROW = [3, 4, 5, 4, 6, 2, 1, 1, 1, 1, 3, 4, 5, 6, 2, 1, 1, 4, 5, 3, 6, 2]


def _loadings(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(
        values, dims=("mode", "unit"), coords={"mode": np.arange(1, len(values) + 1)}
    )


def test_class_labels_put_every_space_inside_a_run_in_its_own_class():
    labels = class_labels(torch.tensor([ROW]), STRINGS)
    assert labels.shape == (1, len(ROW) - 1)
    # unit t predicts token t + 1: units 5..8 predict the four spaces after "\n"
    assert list(labels[0, 5:9]) == [SPACE_RUN] * 4
    assert labels[0, 1] == "bracket" and labels[0, 3] == "bracket"  # "(" and ")"


def test_separation_is_one_for_a_mode_that_is_the_class_indicator():
    rng = np.random.default_rng(0)
    labels = np.array(["bracket"] * 30 + ["word_start"] * 50 + ["delimiter"] * 40)
    values = rng.normal(size=(3, labels.size))
    values[1] = 2.0 * (labels == "bracket") - 0.3  # an affine image of the indicator
    table = class_separation(_loadings(values), labels)
    assert table.sel(mode=2, pattern_class="bracket") == pytest.approx(1.0)
    # the other classes on that mode: r = −sqrt(p_b p_c / ((1 − p_b)(1 − p_c)))
    p_b, p_c = 30 / 120, 50 / 120
    expected = -np.sqrt(p_b * p_c / ((1 - p_b) * (1 - p_c)))
    assert table.sel(mode=2, pattern_class="word_start") == pytest.approx(expected)


def test_classes_with_too_few_units_are_not_read():
    labels = np.array(["bracket"] * 5 + ["word_start"] * 60 + ["delimiter"] * 55)
    table = class_separation(_loadings(np.random.default_rng(1).normal(size=(2, 120))), labels)
    assert "bracket" not in table.pattern_class.values


def test_the_rule_skips_pc1_the_fin_mode_and_the_spaces():
    table = xr.DataArray(
        [[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.1, -0.4, 0.3], [-0.5, 0.0, 0.2]],
        dims=("mode", "pattern_class"),
        coords={"mode": [1, 2, 3, 4], "pattern_class": ["bracket", SPACE_RUN, "word_part"]},
    )
    # PC1's 0.9 and the spaces' 0.8 are not candidates; the fin mode 4 (−0.5) is left out
    assert pick_further_mode(table, exclude=[4]) == {
        "mode": 3,
        "pattern_class": "word_part",
        "r": pytest.approx(0.3),
    }
    assert pick_further_mode(table, exclude=[])["mode"] == 4  # −0.5 wins without exclusion
    with pytest.raises(ValueError, match="no mode beyond PC1"):
        pick_further_mode(table.sel(mode=[1, 4]), exclude=[4])


def _chi_with_bracket_mode(probe: torch.Tensor, seed: int = 2) -> xr.DataArray:
    """χ (component, unit) = a common loss-level row plus a second, smaller pattern on the
    bracket units with its own component loadings: the modes' answer is known."""
    rng = np.random.default_rng(seed)
    labels = class_labels(probe, STRINGS).ravel()
    level = 1.0 + rng.random(labels.size)
    bracket = (labels == "bracket").astype(float)
    a = np.array([1.0, 0.9, 1.1, 1.0])
    b = np.array([0.8, -0.6, 0.1, -0.3])
    chi = a[:, None] * level[None] + 0.6 * b[:, None] * bracket[None]
    chi = chi + 1e-3 * rng.normal(size=chi.shape)
    return xr.DataArray(chi, dims=("component", "unit"), coords={"component": list("abcd")})


def test_amplify_weights_up_weight_the_class_the_mode_separates():
    probe = torch.tensor([ROW] * 8)
    train = torch.tensor([ROW] * 12)
    chi = _chi_with_bracket_mode(probe)
    labels = class_labels(probe, STRINGS).ravel()
    modes = decompose(chi, "component")
    table = class_separation(modes["unit_loading"], labels)
    pick = pick_further_mode(table)
    assert pick["pattern_class"] == "bracket" and abs(pick["r"]) > 0.9
    plan = further_mode_weights(chi, 30.0, pick, probe, train, STRINGS, alpha=1.0)
    rho, weight = plan.weights, plan.summary["class_weight"]
    assert rho.shape == (12, len(ROW) - 1) and rho.mean() == pytest.approx(1.0, rel=1e-6)
    others = [w for c, w in weight.items() if c != "bracket"]
    assert weight["bracket"] > max(others)  # amplify: the class's side of the mode goes up
    # the probes get the same class rule, and the loop's prediction is nβ·χ·(ρ/ρ̄ − 1)/U
    assert plan.probe_weights.shape == (labels.size,)
    np.testing.assert_allclose(
        plan.summary["predicted_shift"], predicted_shift(chi.values, plan.probe_weights, 30.0)
    )
    # every bracket unit's weight is the class weight; probes and training agree
    np.testing.assert_allclose(plan.probe_weights[labels == "bracket"], weight["bracket"])


def test_separation_of_reads_the_class_on_its_best_mode():
    probe = torch.tensor([ROW] * 8)
    chi = _chi_with_bracket_mode(probe)
    labels = class_labels(probe, STRINGS).ravel()
    got = separation_of(chi, labels, "bracket")
    assert got["separation"] > 0.9 and got["mode"] == 2
    assert np.isnan(separation_of(chi, labels, "no_such_class")["separation"])


def test_class_loss_gap():
    labels = np.array(["bracket", "word_start", "bracket", "delimiter"])
    got = class_loss(np.array([1.0, 3.0, 2.0, 5.0]), labels, "bracket")
    assert got == {"class": 1.5, "other": 4.0, "gap": -2.5}
    with pytest.raises(ValueError, match="no units"):
        class_loss(np.ones(4), labels, "whitespace")


def _reading(phi, loss_gap, separation):
    return {
        "phi": list(phi),
        "phi_se": [0.01] * len(phi),
        "loss": {"class": 1.0 + loss_gap, "other": 1.0, "gap": loss_gap},
        "separation": {"separation": separation, "mode": 2, "r": separation},
    }


def test_outcome_reads_each_prediction_against_the_same_seeds_baseline():
    predicted = np.array([0.02, -0.01, 0.0, 0.03])
    plan = {"predicted_shift": predicted.tolist(), "components": ["L0H0", "L0H1", "embed", "L1H0"]}
    base = np.array([0.5, 0.4, 0.3, 0.2])
    runs = [
        {"seed": 0, "condition": "baseline", "further": _reading(base, -0.1, 0.3)},
        # seed 0: moved 3× along the prediction, gap lower, separation higher
        {
            "seed": 0,
            "condition": "chi_further_mode",
            "further": _reading(base + 3 * predicted, -0.3, 0.5),
        },
        {"seed": 0, "condition": "control_dose", "further": _reading(base, -0.1, 0.3)},
        {"seed": 1, "condition": "baseline", "further": _reading(base, -0.1, 0.3)},
        # seed 1: moved against it, gap higher, separation lower
        {
            "seed": 1,
            "condition": "chi_further_mode",
            "further": _reading(base - predicted, 0.2, 0.1),
        },
    ]
    got = outcome(plan, runs)
    s0, s1 = got["seeds"]
    assert s0["loop"]["cosine"] == pytest.approx(1.0) and s0["loop"]["gain"] == pytest.approx(3.0)
    moved, control = s0["conditions"]["chi_further_mode"], s0["conditions"]["control_dose"]
    assert moved["loss_gap_change"] == pytest.approx(-0.2)
    assert moved["separation_change"] == pytest.approx(0.2)
    assert s0["met"] == {"loss": True, "map": True, "loop": True}
    value, se = moved["along"]
    assert value == pytest.approx(3 * np.linalg.norm(predicted))
    assert se == pytest.approx(np.sqrt(2) * 0.01)  # two independent SEs of 0.01, unit vector
    assert control["along"][0] == pytest.approx(0.0) and control["loss_gap_change"] == 0.0
    assert set(s1["conditions"]) == {"chi_further_mode"}
    assert s1["met"] == {"loss": False, "map": False, "loop": False}
    assert got["met_every_seed"] == {"loss": False, "map": False, "loop": False}


def test_outcome_refuses_runs_read_on_another_workload():
    plan = {"predicted_shift": [0.1, 0.2], "components": ["L0H0", "embed"]}
    other = {**_reading([0.1, 0.2], 0.0, 0.3), "components": ["L0H0", "unembed"]}
    runs = [
        {"seed": 0, "condition": "baseline", "further": _reading([0.1, 0.2], 0.0, 0.3)},
        {"seed": 0, "condition": "chi_further_mode", "further": other},
    ]
    with pytest.raises(ValueError, match="plan's workload"):
        outcome(plan, runs)


def test_sampler_noise_is_the_difference_between_two_estimates_of_one_model():
    plan = {"predicted_shift": [0.0, 0.3, 0.4], "components": ["L0H0", "L0H1", "embed"]}
    a = _reading([0.2, 0.2, 0.2], 0.0, 0.30)
    b = _reading([0.2, 0.5, 0.6], 0.0, 0.25)  # moved by exactly the predicted shift
    got = sampler_noise([{"metric": 0.5}, {"metric": 0.35}], [a, b], plan)
    assert got["fin_metric_difference"] == pytest.approx(-0.15)
    assert got["separation"] == [0.30, 0.25]
    assert got["separation_difference"] == pytest.approx(-0.05)
    value, se = got["phi_along_prediction"]
    assert value == pytest.approx(0.5)  # |(0, 0.3, 0.4)| = 0.5
    assert se == pytest.approx(np.sqrt(2) * 0.01)
    # without a further mode only the fin metric is read
    assert set(sampler_noise([{"metric": 0.5}, {"metric": 0.4}], [], None)) == {
        "fin_metric",
        "fin_metric_difference",
    }
