"""The dose summary's verdicts (``scripts/induce_dose_summary.py``) on constructed rows."""

from __future__ import annotations

from pathlib import Path

from tests.experiments.test_induce_flow import _load_script

summary = _load_script("induce_dose_summary")
ROOT = Path(__file__).resolve().parents[2]


def _rows(**steps):
    return [{"name": name, "formation_step": step} for name, step in steps.items()]


def test_controls_are_within_bounds_only_between_0_8_and_1_25_of_the_baseline():
    assert summary.within_bounds(5000, 5000) is True
    assert summary.within_bounds(4000, 5000) is True  # 0.8× exactly
    assert summary.within_bounds(6250, 5000) is True  # 1.25× exactly
    assert summary.within_bounds(3750, 5000) is False
    assert summary.within_bounds(6500, 5000) is False
    assert summary.within_bounds(None, 5000) is False  # never formed: out of bounds
    assert summary.within_bounds(None, None) is True  # with a baseline that never formed
    assert summary.within_bounds(8000, None) is None  # ratio undefined


def test_repress_meets_its_target_at_twice_the_baseline_or_beyond_the_run():
    assert summary.repress_meets(None, 6500) is True
    assert summary.repress_meets(13000, 6500) is True
    assert summary.repress_meets(12750, 6500) is False
    assert summary.repress_meets(None, None) is None


def test_a_dose_row_reads_the_controls_script_json():
    data = {
        "config": str(ROOT / "docs/examples/induce_wide_embed_mode_from_checkpoint.json"),
        "train_seed": 1,
        "ratio": 16.0,
        "steps": None,
        "rows": _rows(
            baseline=6500,
            induce=5500,
            repress=None,
            control_shuffled=6750,
            **{"control_random, extrapolation seed 0": 9000},
        ),
    }
    row = summary.dose_row(data)
    assert row["run_end"] == 10000 and row["ratio"] == 16.0
    assert row["ratio_to_baseline"]["induce"] == 5500 / 6500
    assert row["repress_meets_target"] is True
    assert row["controls_within_bounds"] == {
        "control_shuffled": True,
        "control_random, extrapolation seed 0": False,
    }
    assert row["induce_no_later"] is True
    assert summary.cell(row, "induce shuffled within cells, seed 0") == "—"
    assert summary.cell(row, "repress") == "none by 10,000"
    assert summary.cell(row, "induce") == "5,500 (0.85×)"
