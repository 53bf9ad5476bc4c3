"""Property-based tests of the parts that parse or validate input."""

from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patterning_core.data.token_classes import classify, induction_mask
from patterning_core.sampling.sgld import ConfigError, SamplerConfig

FIELDS = [f.name for f in dataclasses.fields(SamplerConfig)]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)


def valid(name: str, value: object) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if name in ("step_size", "n_beta", "rmsprop_eps"):
        return number and math.isfinite(value) and value > 0
    if name == "localization":
        return number and math.isfinite(value) and value >= 0
    if name in ("num_chains", "num_draws", "steps_between_draws"):
        return integer and value >= 1
    if name in ("num_burnin", "seed"):
        return integer and value >= 0
    if name == "batch_size":
        return value is None or (integer and value >= 1)
    if name == "preconditioner":
        return value in ("sgld", "rmsprop")
    if name == "rmsprop_alpha":
        return number and 0 <= value < 1
    raise AssertionError(name)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_sampler_config_accepts_exactly_the_valid_settings(changes):
    all_valid = all(valid(k, v) for k, v in changes.items())
    try:
        config = SamplerConfig(**changes)
    except ConfigError as err:
        assert not all_valid, f"rejected valid settings {changes}: {err}"
        bad = [k for k, v in changes.items() if not valid(k, v)]
        assert any(k in str(err) for k in bad), f"error names no bad field: {err}"
    else:
        assert all_valid, f"accepted invalid settings {changes}"
        assert SamplerConfig.from_dict(config.to_dict()) == config


@settings(max_examples=200)
@given(
    st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=24), min_size=1, max_size=4).filter(
        lambda rows: len({len(r) for r in rows}) == 1
    )
)
def test_induction_mask_matches_its_definition(rows):
    tokens = torch.tensor(rows)
    mask = induction_mask(tokens)
    for b, row in enumerate(rows):
        for t in range(len(row)):
            earlier = any(row[s - 1] == row[t - 1] and row[s] == row[t] for s in range(1, t))
            assert bool(mask[b, t]) == (t >= 1 and earlier)


@settings(max_examples=100)
@given(
    st.lists(st.text(max_size=4), min_size=8, max_size=8),
    st.lists(st.integers(0, 7), min_size=2, max_size=20),
)
def test_classify_handles_any_token_text(strings, ids):
    classes = classify(torch.tensor([ids]), strings)
    primary = classes.primary()
    assert primary.shape == (1, len(ids))
    assert bool((classes.whitespace_len >= 0).all())
