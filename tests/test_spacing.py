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
