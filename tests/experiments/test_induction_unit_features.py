"""Unit features: alignment with the loss units and the columns they claim."""

import numpy as np
import pytest
import torch

from patterning_core.data.context_features import context_features
from patterning_core.data.token_classes import PRIMARY_CLASSES, classify
from patterning_core.experiments.induction.unit_features import (
    predictable_units,
    reference_feature_names,
    reference_features,
    unit_feature_names,
    unit_features,
)
from patterning_core.model.transformer import (
    attention_patterns,
    forward,
    init_params,
    per_token_loss,
    preset,
)

STRINGS = ["a", "b", " c", "(", "  ", "de", ")", "x"]


def test_unit_features_follow_the_predicted_token():
    tokens = torch.tensor([[0, 1, 2, 0, 1, 3, 0, 1], [4, 4, 5, 6, 7, 0, 1, 2]])
    x = unit_features(tokens, STRINGS, chunk=1)
    names = unit_feature_names()
    assert x.shape == (2, 7, len(names))
    # one class per unit, the class of token t + 1
    classes = x[..., : len(PRIMARY_CLASSES)]
    np.testing.assert_array_equal(classes.sum(-1), 1.0)
    primary = classify(tokens, STRINGS).primary()[:, 1:].numpy()
    np.testing.assert_array_equal(classes.argmax(-1), primary)
    # the in-context columns are those of token t + 1
    feats = context_features(tokens)
    col = names.index("bigram_count")
    np.testing.assert_allclose(x[..., col], np.log1p(feats.bigram_count[:, 1:].numpy()))
    # unit (0, 6) predicts the last "b" after "a": bigram "a b" seen twice before
    assert predictable_units(tokens)[0, 6] and not predictable_units(tokens)[1, 0]


def test_reference_features_read_the_model_at_the_query_position():
    """Every column against its definition, computed by brute force on a tiny model: the
    unit's loss; per head the attention entropy, self-, previous-token attention, and the
    attention to positions following an earlier occurrence of the query's token."""
    config = preset("tiny")
    params = init_params(config, seed=3)
    tokens = torch.tensor([[5, 7, 9, 5, 7, 9, 5, 2, 5, 7], [1, 1, 1, 4, 1, 4, 2, 2, 1, 4]])
    x = reference_features(params, config, tokens, chunk=1)
    names = reference_feature_names(config.n_layers, config.n_heads)
    assert x.shape == (2, 9, len(names)) and x.dtype == np.float32
    loss = per_token_loss(forward(params, tokens, config), tokens)
    np.testing.assert_allclose(x[..., 0], loss.numpy(), rtol=1e-5)
    patterns = attention_patterns(params, tokens, config)
    for b in range(2):
        for t in range(9):
            for layer, pattern in enumerate(patterns):
                for head in range(config.n_heads):
                    p = pattern[b, head, t].double().numpy()
                    target = [j for j in range(1, t + 1) if tokens[b, j - 1] == tokens[b, t]]
                    expected = {
                        "entropy": -(p[: t + 1] * np.log(p[: t + 1])).sum(),
                        "self": p[t],
                        "previous": p[t - 1] if t > 0 else 0.0,
                        "induction_target": p[target].sum(),
                    }
                    for stat, value in expected.items():
                        column = names.index(f"L{layer}H{head}_{stat}")
                        assert x[b, t, column] == pytest.approx(value, abs=1e-5), (stat, b, t)
