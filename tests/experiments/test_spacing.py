"""The spacing experiment's measures: classes, head spacing scores, whitespace correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from patterning_core.experiments.spacing.science import (
    spacing_classes,
    spacing_scores,
    spacing_units,
    unit_losses_by_kind,
    whitespace_correlations,
)
from patterning_core.model.transformer import TransformerConfig, init_params

STRINGS = ["def", " f", "(", ")", ":", "\n    ", " ", "\n        ", "x"]
CFG = TransformerConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=12, d_vocab=9)


def test_spacing_classes_split_whitespace_by_run_length() -> None:
    # def f ( ) : \n␣␣␣␣ x \n␣␣␣␣␣␣␣␣ x ␣ x
    tokens = torch.tensor([[0, 1, 2, 3, 4, 5, 8, 7, 8, 6, 8]])
    codes, names = spacing_classes(tokens, STRINGS)
    # unit t predicts token t + 1
    got = [names[c] for c in codes[0]]
    assert got[4] == "whitespace_long"  # "\n    ": 5 characters > SHORT_RUN = 4
    assert got[6] == "whitespace_long"  # "\n        ": 9 characters
    assert got[8] == "whitespace_short"  # " ": 1 character
    assert got[1] == "bracket" and got[3] == "delimiter"
    assert spacing_units(tokens, STRINGS)[0].tolist() == [
        name.startswith("whitespace") for name in got
    ]


def test_a_head_that_writes_nothing_has_spacing_score_zero() -> None:
    params = init_params(CFG, 0)
    params = {k: v * 4 for k, v in params.items()}  # larger weights: every head matters
    params["blocks.1.attn.W_O"][1] = 0.0
    tokens = torch.randint(0, 9, (32, 12), generator=torch.Generator().manual_seed(0))
    scores = spacing_scores(params, CFG, tokens, STRINGS)
    assert scores["L1H1"] == 0.0
    assert all(abs(v) > 0 for k, v in scores.items() if k != "L1H1")
    losses = unit_losses_by_kind(params, CFG, tokens, STRINGS)
    assert set(losses) == {"spacing", "other"} and all(np.isfinite(list(losses.values())))


def test_whitespace_correlation_known_answers() -> None:
    is_spacing = np.array([1, 0, 0, 1, 0, 0], dtype=bool)
    loadings = np.stack([is_spacing * 2.0 + 1.0, -(is_spacing * 1.0), np.ones(6)])
    modes = xr.Dataset({"unit_loading": (("mode", "unit"), loadings)}, coords={"mode": [1, 2, 3]})
    corr = whitespace_correlations(modes, is_spacing)
    np.testing.assert_allclose(corr.values, [1.0, -1.0, 0.0], atol=1e-12)


def test_spacing_scores_need_both_kinds_of_target() -> None:
    tokens = torch.zeros(2, 12, dtype=torch.long)
    with pytest.raises(ValueError, match="both whitespace and other"):
        spacing_scores(init_params(CFG, 0), CFG, tokens, STRINGS)


def _numbers() -> dict:
    """The spacing report's inputs for two heads, two modes and two runs, by hand."""
    run = {
        "seed": 0,
        "losses": {"spacing": 1.23456, "other": 3.0},
        "spacing_scores": {"L0H0": 0.5, "L0H1": -0.25},
        "curve": [{"spacing": 2.0, "other": 4.0}, {"spacing": 1.23456, "other": 3.0}],
    }
    return {
        "preset": "demo",
        "data": {"source": "corpus"},
        "steps": 40,
        "seeds": [0],
        "alpha": 1.0,
        "seconds_total": 12.3,
        "scores_step": 40,
        "reference_spacing_scores": {"L0H1": 0.1, "L0H0": 0.2},
        "spacing_heads": ["L0H0", "L0H1"],
        "chi_step": 20,
        "probe_units": 30,
        "probe_spacing_units": 7,
        "mode": 2,
        "explained_variance": [0.75, 0.25],
        "alignments": {1: 0.1, 2: -0.9},
        "whitespace_correlation": {1: 0.05, 2: -0.6},
        "patterning": {
            "class_dh_induce": {"whitespace_short": 1e-3},
            "fit_r2": 0.5,
            "target_retained": {"cosine": 0.8},
        },
        "curve_steps": [0, 40],
        "results": [{**run, "condition": "baseline"}, {**run, "condition": "amplify"}],
    }


def test_spacing_report_tables(tmp_path) -> None:
    from patterning_core.experiments.spacing.report import spacing_report

    report = spacing_report(tmp_path, _numbers())
    assert report.png == tmp_path / "spacing.png" and report.png.stat().st_size > 0
    lines = report.text.splitlines()
    modes = lines.index(
        "| mode | variance | alignment with spacing scores | whitespace correlation |"
    )
    assert lines[modes + 1 : modes + 4] == [
        "|---:|---:|---:|---:|",
        "| 1 | 75.0 % | +0.10 | +0.05 |",
        "| 2 | 25.0 % | -0.90 | -0.60 |",
    ]
    runs = lines.index(
        "| condition | seed | loss, whitespace | loss, other | L0H0 | L0H1 | best head |"
    )
    assert lines[runs + 1 : runs + 4] == [
        "|---|---:|---:|---:|---:|---:|---:|",
        "| baseline | 0 | 1.235 | 3.000 | 0.500 | -0.250 | 0.500 |",
        "| amplify | 0 | 1.235 | 3.000 | 0.500 | -0.250 | 0.500 |",
    ]
    assert "0.200 | 0.100" in report.text  # reference scores, heads sorted by name
    assert "Spacing mode: **2**" in report.text and "![curves](spacing.png)" in report.text
    assert report.rows[1] == {
        "condition": "amplify",
        "seed": 0,
        "loss_whitespace": 1.235,
        "loss_other": 3.0,
        "best_head_score": 0.5,
    }
