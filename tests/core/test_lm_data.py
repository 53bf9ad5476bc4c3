"""Data specs: corpus mixed with synthetic in-context bigrams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterning_core.data.lm_data import (
    check_data_spec,
    collapse_space_runs,
    mix_in_context_bigrams,
    synthetic_count,
)
from patterning_core.data.synthetic import synthetic_like
from patterning_core.model.transformer import preset
from patterning_core.sampling.sgld import ConfigError

DEMO = preset("demo")


def test_mix_adds_the_stated_fraction_of_synthetic_sequences() -> None:
    corpus = torch.randint(0, DEMO.d_vocab, (300, DEMO.n_ctx), generator=torch.Generator())
    mixed = mix_in_context_bigrams(corpus, 0.25, DEMO, seed=3)
    assert mixed.shape == (400, DEMO.n_ctx)  # 100 / 400 = 0.25
    assert torch.equal(mixed[:300], corpus)
    synthetic, _ = synthetic_like(DEMO.d_vocab, DEMO.n_ctx, 100, seed=3)
    assert torch.equal(mixed[300:], synthetic)
    assert torch.equal(mix_in_context_bigrams(corpus, 0.25, DEMO, seed=3), mixed)
    assert mix_in_context_bigrams(corpus, 0.0, DEMO) is corpus
    assert synthetic_count(300, 0.25) == 100 and synthetic_count(300, 0.0) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mix_in_context_bigrams(corpus, 1.0, DEMO)


def test_synthetic_sequences_carry_in_context_bigrams() -> None:
    # Each sequence draws from its own 16-token alphabet and follows a successor map, so the
    # bigram ending at most tokens already occurred in the context (what induction exploits).
    tokens, copied = synthetic_like(DEMO.d_vocab, DEMO.n_ctx, 64, seed=0)
    assert max(len(set(row.tolist())) for row in tokens) <= 16
    assert copied.float().mean() > 0.5


@pytest.mark.parametrize("bad", [-0.1, 1.0, "half", True])
def test_bad_mixing_fraction_is_named(bad) -> None:
    with pytest.raises(ConfigError, match="in_context_bigrams must be a fraction in"):
        check_data_spec({"source": "corpus", "in_context_bigrams": bad}, DEMO)


def test_bad_whitespace_mode_is_named_with_the_valid_ones() -> None:
    check_data_spec({"source": "corpus", "whitespace": "split"}, DEMO)
    with pytest.raises(ConfigError, match=r"whitespace must be one of \['merged', 'split'\]"):
        check_data_spec({"source": "corpus", "whitespace": "runs"}, DEMO)


def test_collapse_space_runs_keeps_the_first_space_of_every_run() -> None:
    strings = ["<eot>", " ", "\n", "def", "x"]
    train = torch.tensor([[3, 1, 1, 1], [4, 2, 1, 1], [1, 3, 1, 4]])
    # stream 3 1 1 1 | 4 2 1 1 | 1 3 1 4: the run across the 2nd/3rd rows is one run
    out = collapse_space_runs(train, strings)
    assert out.tolist() == [[3, 1, 4, 2], [1, 3, 1, 4]]
    with pytest.raises(ConfigError, match="whitespace"):
        collapse_space_runs(train, ["<eot>", "  ", "\n", "def", "x"])
    with pytest.raises(ConfigError, match="'whitespace': 'split'"):
        check_data_spec({"source": "corpus", "collapse_spaces": True}, DEMO)


def test_misspelled_data_key_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown data key\(s\) \['path'\].*'paths'"):
        check_data_spec({"source": "corpus", "path": ["somewhere"]}, DEMO)
    with pytest.raises(ConfigError, match=r"\['n_seq'\] for source 'synthetic'"):
        check_data_spec({"source": "synthetic", "preset": "bench", "n_seq": 5}, DEMO)


def test_workload_probes_repeat_the_first_half_of_the_stated_share() -> None:
    """``probe_repeat`` f: round(f·B) of the selected probe sequences have their second half
    replaced by their first, the others are untouched; f = 0 (or absent) selects exactly
    what ``select_sequences`` selects; a share outside [0, 1] is named."""
    from patterning_core.data.context_features import context_features
    from patterning_core.data.lm_data import select_sequences, workload_probes

    val = torch.randint(0, 500, (40, 64), generator=torch.Generator().manual_seed(0))
    plain = workload_probes(val, {"probe_seqs": 10, "probe_seed": 3})
    assert torch.equal(plain, select_sequences(val, 10, seed=3))
    repeated = workload_probes(val, {"probe_seqs": 10, "probe_seed": 3, "probe_repeat": 0.5})
    copied = (repeated[:, 32:] == repeated[:, :32]).all(dim=1)
    assert int(copied.sum()) == 5
    assert torch.equal(repeated[:, :32], plain[:, :32])
    assert torch.equal(repeated[~copied], plain[~copied])
    # copying predicts the second copy: every bigram there occurred before (from its 2nd token)
    repeats = context_features(repeated).bigram_repeated
    assert bool(repeats[copied][:, 33:].all())
    with pytest.raises(ValueError, match="probe_repeat must be a fraction"):
        workload_probes(val, {"probe_seqs": 10, "probe_repeat": 1.5})


def test_workload_probes_append_synthetic_sequences_that_are_not_the_training_ones() -> None:
    """``probe_synthetic`` k: the natural probes unchanged, then k sequences of the training
    mix's generator with another seed (none equals a training synthetic sequence);
    reproducible; a negative k or a missing vocabulary is named."""
    from patterning_core.data.lm_data import mix_in_context_bigrams, workload_probes

    config = preset("tiny")
    val = torch.randint(0, config.d_vocab, (40, config.n_ctx), generator=torch.Generator())
    spec = {"probe_seqs": 10, "probe_seed": 3, "probe_synthetic": 4}
    probes = workload_probes(val, spec, config.d_vocab)
    assert probes.shape == (14, config.n_ctx) and probes.dtype == val.dtype
    assert torch.equal(probes[:10], workload_probes(val, {"probe_seqs": 10, "probe_seed": 3}))
    assert torch.equal(probes, workload_probes(val, spec, config.d_vocab))
    corpus = torch.zeros(16, config.n_ctx, dtype=torch.int64)
    training = mix_in_context_bigrams(corpus, 0.5, config)[16:]
    assert not (probes[10:, None, :] == training[None]).all(-1).any()
    with pytest.raises(ValueError, match="d_vocab"):
        workload_probes(val, spec)
    with pytest.raises(ValueError, match="probe_synthetic must be"):
        workload_probes(val, {**spec, "probe_synthetic": -1}, config.d_vocab)


def test_transformer_workload_labels_its_synthetic_probe_units(tmp_path) -> None:
    from patterning_core.model.checkpoints import save_checkpoint
    from patterning_core.model.transformer import init_params
    from patterning_core.store.workloads import build_workload

    cfg = preset("tiny")
    ckpt = save_checkpoint(tmp_path / "step_00000001.safetensors", init_params(cfg, 0), cfg, 1, 0)
    spec = {
        "kind": "transformer",
        "data": {"source": "synthetic", "preset": "tiny"},
        "sgld_seqs": 8,
        "probe_seqs": 2,
        "probe_synthetic": 1,
    }
    work = build_workload(spec, ckpt)
    assert work.probes[0].shape[0] == 3
    units = cfg.n_ctx - 1
    np.testing.assert_array_equal(
        work.unit_coords["synthetic"], [False] * 2 * units + [True] * units
    )
    plain = build_workload({**spec, "probe_synthetic": 0}, ckpt)
    assert "synthetic" not in plain.unit_coords


def test_loaded_tokens_say_how_many_sequences_are_synthetic(tmp_path, monkeypatch) -> None:
    import json
    from pathlib import Path

    from patterning_core.data.lm_data import load_lm_tokens

    monkeypatch.setenv("PATTERNING_HOME", str(tmp_path))
    spec = {"source": "corpus", "paths": [str(Path(json.__file__).parent)]}
    plain = load_lm_tokens(spec, DEMO)
    mixed = load_lm_tokens({**spec, "in_context_bigrams": 0.2}, DEMO)
    n = plain.train.shape[0]
    assert plain.n_synthetic == 0
    assert mixed.n_synthetic == synthetic_count(n, 0.2) == mixed.train.shape[0] - n > 0
    assert torch.equal(mixed.train[:n], plain.train)
