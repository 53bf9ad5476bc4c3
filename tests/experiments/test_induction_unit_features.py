"""Unit features: alignment with the loss units and the columns they claim."""

import numpy as np
import torch

from patterning_core.data.context_features import context_features
from patterning_core.data.token_classes import PRIMARY_CLASSES, classify
from patterning_core.experiments.induction.unit_features import (
    predictable_units,
    unit_feature_names,
    unit_features,
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
