"""Synthetic outline text (``patterning_core/data/outline.py``): the marker after a run of
spaces names the run's length, depths move by at most one level, and the mixed training set
holds the stated share of outline sequences with each space a token of its own."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from patterning_core.data.lm_data import (
    check_data_spec,
    load_lm_tokens,
    probe_kinds,
    synthetic_count,
)
from patterning_core.data.outline import MARKERS, outline_text
from patterning_core.model.transformer import preset
from patterning_core.sampling.sgld import ConfigError


def depths_and_markers(text: str) -> list[tuple[int, str]]:
    out = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        out.append((len(line) - len(body), body[0]))
    return out


def test_the_marker_after_a_run_names_its_length_and_depth_moves_by_one_level():
    lines = depths_and_markers(outline_text(2000, seed=0, restart=0.0))
    assert all(MARKERS[d] == marker for d, marker in lines)
    steps = {b - a for (a, _), (b, _) in itertools.pairwise(lines)}
    assert steps <= {-1, 0, 1}
    assert max(d for d, _ in lines) == len(MARKERS) - 1  # a random walk reaches every depth


def test_outline_text_is_seeded_and_refuses_a_depth_without_a_marker():
    assert outline_text(50, seed=3) == outline_text(50, seed=3) != outline_text(50, seed=4)
    with pytest.raises(ValueError, match="max_depth"):
        outline_text(10, seed=0, max_depth=len(MARKERS))


def test_outline_needs_split_whitespace_and_a_fraction():
    config = preset("demo")
    with pytest.raises(ConfigError, match="'whitespace': 'split'"):
        check_data_spec({"source": "corpus", "outline": 0.2}, config)
    with pytest.raises(ConfigError, match=r"data.outline must be a fraction in \[0, 1\)"):
        check_data_spec({"source": "corpus", "outline": 1.0, "whitespace": "split"}, config)


def test_the_mixed_training_set_holds_the_stated_share_of_outlines(tmp_path, monkeypatch):
    monkeypatch.setenv("PATTERNING_HOME", str(tmp_path))
    config = preset("demo")
    base = {"source": "corpus", "paths": [str(Path(json.__file__).parent)], "whitespace": "split"}
    plain = load_lm_tokens(base, config)
    mixed = load_lm_tokens({**base, "outline": 0.2}, config)
    n = plain.train.shape[0]
    m = synthetic_count(n, 0.2)
    assert mixed.train.shape == (n + m, config.n_ctx)
    assert torch.equal(mixed.train[:n], plain.train) and torch.equal(mixed.val, plain.val)
    strings = mixed.token_strings
    outline = "".join(strings[i] for i in mixed.train[n:].reshape(-1).tolist())
    # every character of the outlines survives tokenization; spaces stay one token each
    assert set(outline) <= set(" \n" + "".join(MARKERS) + "abcdefghijklmnopqrstuvwxyz")
    space = strings.index(" ")
    assert (mixed.train[n:] == space).float().mean() > 0.15
    assert mixed.outline_rows == (n, n + m) and plain.outline_rows is None
    collapsed = load_lm_tokens({**base, "outline": 0.2, "collapse_spaces": True}, config)
    assert collapsed.outline_rows is None  # new windows: no row is outline text alone


def test_outline_probes_follow_the_corpus_probes_and_are_held_out(tmp_path, monkeypatch):
    from patterning_core.data.lm_data import workload_probes

    monkeypatch.setenv("PATTERNING_HOME", str(tmp_path))
    config = preset("demo")
    data = {
        "source": "corpus",
        "paths": [str(Path(json.__file__).parent)],
        "whitespace": "split",
        "outline": 0.2,
    }
    tokens = load_lm_tokens(data, config)
    plain = workload_probes(tokens.val, {"probe_seqs": 4})
    spec = {"probe_seqs": 4, "probe_outline": 2}
    probes = workload_probes(tokens.val, spec, config.d_vocab, tokens.tokenizer)
    assert probes.shape == (6, config.n_ctx) and torch.equal(probes[:4], plain)
    with_synthetic = {**spec, "probe_synthetic": 3}
    kinds = probe_kinds(with_synthetic)
    assert kinds.tolist() == ["corpus"] * 4 + ["outline"] * 2 + ["synthetic"] * 3
    assert (
        len(kinds)
        == workload_probes(tokens.val, with_synthetic, config.d_vocab, tokens.tokenizer).shape[0]
    )
    text = "".join(tokens.token_strings[i] for i in probes[4:].reshape(-1).tolist())
    assert set(text) <= set(" \n" + "".join(MARKERS) + "abcdefghijklmnopqrstuvwxyz")
    corpus_only = {k: v for k, v in data.items() if k != "outline"}
    n_corpus = load_lm_tokens(corpus_only, config).train.shape[0]
    training_rows = {tuple(r) for r in tokens.train[n_corpus:].tolist()}
    assert not any(tuple(r) in training_rows for r in probes[4:].tolist())
    with pytest.raises(ValueError, match="corpus data"):
        workload_probes(tokens.val, spec, config.d_vocab)
