"""Corpus: default files, user paths, BPE tokenizer cache, contexts and split."""

from __future__ import annotations

import pytest
import torch

from patterning_core.data.corpus import (
    EOT,
    default_corpus_files,
    encode_corpus,
    load_corpus,
    make_contexts,
    prepare_lm_data,
    split_contexts,
    stdlib_dir,
    token_strings,
    train_tokenizer,
)

TEXT_A = "def alpha(x):\n    return alpha(x) + beta\n" * 40
TEXT_B = "class Beta:\n    def gamma(self):\n        return self.gamma\n" * 40


@pytest.fixture
def text_dir(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text(TEXT_A)
    (root / "sub" / "b.txt").write_text(TEXT_B)
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (root / ".hidden").write_text("not me")
    return root


def test_default_corpus_is_the_stdlib_sources() -> None:
    files = default_corpus_files()
    root = stdlib_dir()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert len(files) > 100 and "os.py" in rel and "json/decoder.py" in rel
    assert not any(part in ("test", "tests", "site-packages") for r in rel for part in r.split("/"))
    assert rel == sorted(rel)


def test_user_paths(text_dir) -> None:
    corpus = load_corpus([text_dir])
    assert [d.name for d in corpus.documents] == ["a.py", "sub/b.txt"]  # binary, hidden skipped
    assert corpus.documents[0].text == TEXT_A
    assert load_corpus(text_dir / "a.py").documents[0].name == "a.py"
    assert [d.name for d in load_corpus([text_dir], suffixes=[".txt"]).documents] == ["sub/b.txt"]
    assert load_corpus([text_dir]).digest == corpus.digest
    (text_dir / "a.py").write_text(TEXT_A + "#")
    assert load_corpus([text_dir]).digest != corpus.digest


def test_bad_paths_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist"):
        load_corpus([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"no UTF-8 text found.*1 empty, binary or non-UTF-8"):
        load_corpus([tmp_path / "empty"])


def test_tokenizer_training_cache_and_determinism(text_dir, tmp_path) -> None:
    corpus = load_corpus([text_dir])
    cache = tmp_path / "cache"
    tok = train_tokenizer(corpus, 300, cache_dir=cache)
    assert len(list(cache.glob("bpe-*.json"))) == 1
    assert tok.get_vocab_size() <= 300 and tok.token_to_id(EOT) == 0
    again = train_tokenizer(corpus, 300, cache_dir=cache)  # from the cache
    fresh = train_tokenizer(corpus, 300, use_cache=False)  # retrained
    assert again.to_str() == tok.to_str() == fresh.to_str()
    train_tokenizer(corpus, 280, cache_dir=cache)  # other settings, other key
    assert len(list(cache.glob("bpe-*.json"))) == 2
    # byte-level: round trip of any text, and frequent identifiers became single tokens
    text = "return alpha(x) + ünïcode\t\n"
    assert tok.decode(tok.encode(text).ids) == text
    strings = token_strings(tok)
    assert "alpha" in strings or " alpha" in strings
    with pytest.raises(ValueError, match="vocab_size >= 257"):
        train_tokenizer(corpus, 100, cache_dir=cache)


def test_split_whitespace_keeps_runs_as_runs_of_tokens(text_dir, tmp_path) -> None:
    """The merged default turns the 8-space indentation of TEXT_B into one token (the
    corpus repeats it 40 times, far above min_frequency); ``whitespace="split"`` gives
    every whitespace character its own token, so a run of n spaces is n tokens."""
    corpus = load_corpus([text_dir])
    cache = tmp_path / "cache"
    merged = train_tokenizer(corpus, 300, cache_dir=cache)
    split = train_tokenizer(corpus, 300, cache_dir=cache, whitespace="split")
    assert len(list(cache.glob("bpe-*.json"))) == 2  # its own cache key
    line = "\n        return self.gamma\n"
    for tok in (merged, split):
        assert tok.decode(tok.encode(line).ids) == line  # still a lossless byte-level BPE
    merged_ws = [s for s in token_strings(merged) if s and not s.strip()]
    split_ws = [s for s in token_strings(split) if s and not s.strip()]
    assert max(map(len, merged_ws)) > 1
    assert max(map(len, split_ws)) == 1
    pieces = [split.decode([i]) for i in split.encode(line).ids]
    assert pieces[:9] == ["\n"] + [" "] * 8
    with pytest.raises(ValueError, match="whitespace must be one of"):
        train_tokenizer(corpus, 300, cache_dir=cache, whitespace="runs")


def test_stream_contexts_and_split(text_dir, tmp_path) -> None:
    corpus = load_corpus([text_dir])
    tok = train_tokenizer(corpus, 300, cache_dir=tmp_path)
    stream = encode_corpus(corpus, tok, cache_dir=tmp_path)
    eot = tok.token_to_id(EOT)
    assert (stream == eot).sum() == 2 and stream[-1] == eot
    assert tok.decode(stream[: (stream == eot).nonzero()[0, 0]].tolist()) == TEXT_A
    assert torch.equal(encode_corpus(corpus, tok, cache_dir=tmp_path), stream)  # cached
    ctx = make_contexts(stream, 16)
    assert ctx.shape == (len(stream) // 16, 16) and torch.equal(ctx[1], stream[16:32])
    train, val = split_contexts(ctx, val_fraction=0.1, seed=0)
    assert len(val) == max(1, round(0.1 * len(ctx))) and len(train) + len(val) == len(ctx)
    rows = {tuple(r) for r in ctx.tolist()}
    assert {tuple(r) for r in train.tolist()} | {tuple(r) for r in val.tolist()} == rows
    t2, v2 = split_contexts(ctx, val_fraction=0.1, seed=0)
    assert torch.equal(train, t2) and torch.equal(val, v2)
    with pytest.raises(ValueError, match="fewer than one context"):
        make_contexts(stream[:5], 16)


def test_prepare_lm_data(text_dir, tmp_path) -> None:
    data = prepare_lm_data(n_ctx=16, vocab_size=300, paths=[text_dir], cache_dir=tmp_path)
    assert data.train.shape[1] == 16 and data.train.dtype == torch.long
    assert int(data.train.max()) < 300 and len(data.val) >= 1
    assert (tmp_path / "tokenizers").is_dir() and (tmp_path / "corpora").is_dir()
    assert len(data.token_strings) == data.tokenizer.get_vocab_size()


@pytest.mark.slow
def test_default_corpus_pipeline(tmp_path) -> None:
    data = prepare_lm_data(n_ctx=64, vocab_size=512, cache_dir=tmp_path)
    assert data.info["n_documents"] > 100 and data.n_tokens > 1_000_000
    assert data.tokenizer.get_vocab_size() == 512
