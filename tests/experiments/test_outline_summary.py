"""The outline-fin summary on readings whose changes, gaps and targets are worked by hand."""

import pytest

from patterning_core.experiments.spacing.outline_summary import (
    outline_summary,
    plot_outline_summary,
    summary_columns,
    summary_report,
)


def reading(label: str, metric: float) -> dict:
    return {
        "label": label,
        "metric_4": [metric, 0.05],
        "partial_4": [metric - 0.01, 0.05],
        "found_again_4": [0.5, 0.0],
        "counting": {"space_all": 0.5},
        "marker_loss": 1.0,
        "space_loss_after_3_plus": 0.4,
    }


def entry(seed, condition, alpha, metric):
    return {
        "seed": seed,
        "condition": condition,
        "alpha": alpha,
        "reading": reading(f"{condition}{alpha}_seed{seed}", metric),
    }


ENTRIES = [
    entry(0, "baseline", None, 0.60),
    entry(0, "chi_amplify", 2.0, 0.30),  # −0.30, −50 %: halved
    entry(0, "control_amplify", 2.0, 0.66),  # +0.06, +10 %; gap 0.36
    entry(1, "baseline", None, 0.80),
    entry(1, "chi_amplify", 2.0, 0.50),  # −0.30, −37.5 %: not halved
    entry(1, "control_amplify", 2.0, 0.60),  # −0.20, −25 %: not within a quarter; gap 0.10
    entry(2, "chi_amplify", 2.0, 0.20),  # no baseline: a gap, not judged
    entry(2, "control_amplify", 2.0, 0.40),  # gap 0.20
]


def test_changes_gaps_and_targets_as_worked_by_hand():
    s = outline_summary(ENTRIES, resolution=0.15)
    assert s["fin_metric_reference"] == 0.60
    runs = {(r["seed"], r["condition"]): r for r in s["runs"]}
    assert runs[(0, "chi_amplify")]["change"] == pytest.approx(-0.30)
    assert runs[(0, "chi_amplify")]["relative_change"] == pytest.approx(-0.5)
    assert runs[(1, "control_amplify")]["relative_change"] == pytest.approx(-0.25)
    assert runs[(2, "chi_amplify")]["change"] is None
    assert runs[(0, "baseline")]["change"] is None
    gaps = {p["seed"]: (round(p["gap"], 10), p["resolved"]) for p in s["pairs"]}
    assert gaps == {0: (0.36, True), 1: (0.10, False), 2: (0.20, True)}
    (target,) = s["targets"]
    assert target["seeds"] == [0, 1]  # seed 2 has no baseline
    assert target["chi_halves_every_seed"] is False  # seed 1: −37.5 %
    assert target["control_within_quarter"] is False  # seed 1: exactly −25 %
    assert target["chi_below_control_resolved"] == 1  # seed 0 only (seed 2 not judged)
    # the gap needs no baseline: seeds 0, 1, 2 give 0.36, 0.10, 0.20, mean 0.22,
    # deviations +0.14, −0.12, −0.02, sample sd sqrt(0.0344 / 2) = 0.13115
    assert target["paired_seeds"] == [0, 1, 2] and target["chi_below_control"] == 3
    assert target["gap_mean"] == pytest.approx(0.22)
    assert target["gap_sd"] == pytest.approx(0.0344**0.5 / 2**0.5)


def test_every_seed_halved_and_controls_within_a_quarter():
    entries = [e for e in ENTRIES if e["seed"] == 0]
    (target,) = outline_summary(entries)["targets"]
    assert target["chi_halves_every_seed"] and target["control_within_quarter"]
    assert target["chi_below_control_resolved"] == 1
    assert target["gap_mean"] == pytest.approx(0.36) and target["gap_sd"] is None


def test_two_baselines_for_one_seed_are_refused():
    with pytest.raises(ValueError, match="two baselines"):
        outline_summary([entry(0, "baseline", None, 0.6), entry(0, "baseline", None, 0.5)])


def test_report_lists_every_run_and_pair():
    text = summary_report(outline_summary(ENTRIES))
    assert text.count("| chi_amplify | 2 |") == 3 + 3 + 1  # three runs, three pairs, one target row
    assert "| 0 | chi_amplify | 2 | 0.30 ± 0.05 | -0.30 (-50 %) |" in text
    assert "| chi_amplify | 2 | 0, 1 | no | no | 1 of 2 | 3 of 3 | +0.220 ± 0.131 |" in text


def test_plot_has_a_column_per_condition_and_dose(tmp_path):
    from PIL import Image

    summary = outline_summary(ENTRIES)
    columns = summary_columns(summary["runs"])
    assert columns == ["baseline", "chi_amplify ×2", "control_amplify ×2"]
    more = summary["runs"] + [
        {"seed": 0, "condition": c, "alpha": a}
        for c, a in [("control_dose", 1.0), ("collapse_whitespace", None), ("chi_suppress", 1.0)]
    ]
    assert summary_columns(more) == [
        "baseline",
        "collapse_whitespace",
        "chi_suppress ×1",
        "control_dose ×1",
        "chi_amplify ×2",
        "control_amplify ×2",
    ]
    path = plot_outline_summary(summary, tmp_path / "fin.png")
    width, height = Image.open(path).size
    assert width > 300 and height > 200


def test_a_chi_weighting_above_its_control_is_resolved_but_not_counted_below():
    entries = [
        entry(0, "baseline", None, 0.60),
        entry(0, "chi_suppress", 1.0, 0.80),  # +33 %
        entry(0, "control_dose", 1.0, 0.60),  # gap 0.60 − 0.80 = −0.20
    ]
    s = outline_summary(entries, resolution=0.15)
    ((seed, gap, resolved),) = [(p["seed"], p["gap"], p["resolved"]) for p in s["pairs"]]
    assert (seed, resolved) == (0, True) and gap == pytest.approx(-0.20)
    (target,) = s["targets"]
    assert target["chi_below_control_resolved"] == 0 and target["chi_below_control"] == 0
