"""The induce report's reading of runs re-weighted from a checkpoint."""

from patterning_core.experiments.induction.natural_report import _retraining_lines, best_after


def test_best_after_reads_the_curve_at_offsets_from_the_weights_step():
    steps = [0, 250, 500, 750, 1000]
    best = [0.0, 0.1, 0.2, 0.4, 0.5]
    assert best_after(steps, best, 250, (250, 500, 1000)) == {
        "+250": 0.2,
        "+500": 0.4,
        "+1000": None,  # no checkpoint at 1250
    }
    assert best_after(steps, best, 0, (250,)) == {"+250": 0.1}


def test_retraining_table_has_after_weights_columns_only_for_runs_weighted_from_a_step():
    run = {
        "seed": 0,
        "condition": "induce",
        "formation_step": 500,
        "heldout_loss": 2.5,
        "final_best_pms": 0.7,
        "best_pms_after_weights": {"+250": 0.45, "+500": None},
    }
    weighted_from = "\n".join(_retraining_lines([run], weights_from=250))
    assert "| +250 |" in weighted_from and "+500" not in weighted_from
    assert "0.450" in weighted_from and "up to step 250" in weighted_from
    from_start = "\n".join(_retraining_lines([run]))
    assert "+250" not in from_start and "up to step" not in from_start
