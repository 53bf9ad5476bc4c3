"""Language-model data from a small JSON-able spec (what pipeline tasks pass around).

A data spec is one of

- ``{"source": "synthetic", "preset": "bench", "n_seqs": 20000, "seed": 0}``: synthetic
  sequences (``synthetic.py``); token text is ``"<id>"``;
- ``{"source": "corpus", "paths": None, "max_contexts": None}``: the default corpus (the
  Python standard library's source) or the given files/folders, BPE-tokenized with the
  model's vocabulary size and context length (``corpus.py``). Optional
  ``"in_context_bigrams": f`` (``0 <= f < 1``, default 0) makes a fraction ``f`` of the
  training sequences synthetic in-context-bigram sequences (:func:`mix_in_context_bigrams`);
  validation stays pure corpus. Optional ``"whitespace": "split"`` tokenizes every
  whitespace character as a token of its own (default ``"merged"``: runs are merged, see
  ``corpus.train_tokenizer``). Optional ``"collapse_spaces": true`` is the spacing
  fin's data edit: in the *training* sequences every run of space tokens is cut to its
  first space (:func:`collapse_space_runs`); validation keeps the text as it is. Optional
  ``"outline": f`` (``0 <= f < 1``, needs ``whitespace: split``) makes a fraction ``f`` of the
  training sequences synthetic outline text whose indentation depth decides the next token
  (``outline.py``), before any collapse; validation stays corpus text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from patterning_core.data.token_classes import PRIMARY_CLASSES, classify, for_units
from patterning_core.model.transformer import TransformerConfig
from patterning_core.sampling.sgld import ConfigError


@dataclass
class LMTokens:
    """Training and validation sequences ``int64 [N, n_ctx]`` and the text of each token id.

    ``n_synthetic``: the last ``n_synthetic`` training sequences are synthetic in-context
    bigrams (:func:`mix_in_context_bigrams`), the others corpus text. ``outline_rows``: the
    training rows ``[start, stop)`` that hold outline text (``data.outline``; None without
    it, or when ``collapse_spaces`` cut the stream into new windows).
    """

    train: Tensor
    val: Tensor
    token_strings: list[str]
    n_synthetic: int = 0
    tokenizer: object | None = None  # tokenizers.Tokenizer of corpus data (None: synthetic)
    outline_rows: tuple[int, int] | None = None


DATA_SPEC_KEYS = {
    "synthetic": {"source", "preset", "n_seqs", "seed"},
    "corpus": {
        "source",
        "paths",
        "max_contexts",
        "in_context_bigrams",
        "whitespace",
        "collapse_spaces",
        "outline",
    },
}


def check_data_spec(spec: Mapping, config: TransformerConfig) -> None:
    """Check a data spec against the model it feeds, before any data are made or read.

    Raises ``ConfigError`` naming the problem and the fix: an unknown source, key or
    synthetic preset, sequences longer than the model's context (or another vocabulary), a corpus
    for a vocabulary too small for byte-level BPE, corpus paths that do not exist or hold
    no text.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"data must be a mapping such as {{'source': 'synthetic', 'preset': 'bench'}} or "
            f"{{'source': 'corpus', 'paths': [...]}}, got {spec!r}."
        )
    source = spec.get("source")
    if source in DATA_SPEC_KEYS:
        unknown = sorted(set(spec) - DATA_SPEC_KEYS[source])
        if unknown:
            raise ConfigError(
                f"unknown data key(s) {unknown} for source {source!r}; valid keys: "
                f"{sorted(DATA_SPEC_KEYS[source])}."
            )
    if source == "synthetic":
        _check_synthetic(spec, config)
    elif source == "corpus":
        _check_corpus(spec, config)
    else:
        raise ConfigError(f"unknown data source {source!r}; use 'synthetic' or 'corpus'.")


def _check_synthetic(spec: Mapping, config: TransformerConfig) -> None:
    from patterning_core.data.synthetic import SYNTHETIC_PRESETS

    name = spec.get("preset", "bench")
    if name not in SYNTHETIC_PRESETS:
        raise ConfigError(f"unknown synthetic preset {name!r}; valid: {sorted(SYNTHETIC_PRESETS)}.")
    syn = SYNTHETIC_PRESETS[name]
    matching = [
        n
        for n, s in SYNTHETIC_PRESETS.items()
        if (s.d_vocab, s.n_ctx) == (config.d_vocab, config.n_ctx)
    ]
    fix = (
        f"use data preset {matching[0]!r}, made for this model"
        if matching
        else "use a model preset whose context and vocabulary match the data"
    )
    if syn.n_ctx > config.n_ctx:
        raise ConfigError(
            f"synthetic preset {name!r} makes sequences of {syn.n_ctx} tokens, longer than the "
            f"model's context (n_ctx={config.n_ctx}): the model cannot read them; {fix}."
        )
    if (syn.d_vocab, syn.n_ctx) != (config.d_vocab, config.n_ctx):
        raise ConfigError(
            f"synthetic preset {name!r} makes vocabulary {syn.d_vocab} and context "
            f"{syn.n_ctx}, the model has {config.d_vocab} and {config.n_ctx}; {fix}."
        )


def _check_corpus(spec: Mapping, config: TransformerConfig) -> None:
    from patterning_core.data.corpus import check_corpus_paths

    if config.d_vocab < 257:
        raise ConfigError(
            f"corpus data need a byte-level BPE vocabulary of at least 257 tokens, the model "
            f"has d_vocab={config.d_vocab}: use a model preset with a larger vocabulary, or "
            "synthetic data."
        )
    for key in ("in_context_bigrams", "outline"):
        fraction = spec.get(key, 0.0)
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction < 1
        ):
            raise ConfigError(f"data.{key} must be a fraction in [0, 1), got {fraction!r}.")
    if spec.get("outline", 0.0) and spec.get("whitespace") != "split":
        raise ConfigError(
            "data.outline needs runs of spaces kept as runs of tokens: add "
            "'whitespace': 'split' to the data spec."
        )
    from patterning_core.data.corpus import WHITESPACE_MODES

    if spec.get("collapse_spaces", False) and spec.get("whitespace") != "split":
        raise ConfigError(
            "data.collapse_spaces needs runs of spaces kept as runs of tokens: add "
            "'whitespace': 'split' to the data spec."
        )
    if spec.get("whitespace", "merged") not in WHITESPACE_MODES:
        raise ConfigError(
            f"data.whitespace must be one of {list(WHITESPACE_MODES)}, got "
            f"{spec['whitespace']!r}: 'split' makes every whitespace character a token."
        )
    max_contexts = spec.get("max_contexts")
    if max_contexts is not None and (
        isinstance(max_contexts, bool) or not isinstance(max_contexts, int) or max_contexts < 1
    ):
        raise ConfigError(
            f"data.max_contexts must be an integer >= 1 or null, got {max_contexts!r}."
        )
    paths = spec.get("paths")
    if paths is None:
        return
    try:
        check_corpus_paths(paths)
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.paths: {err}.") from err


def load_lm_tokens(spec: Mapping, config: TransformerConfig) -> LMTokens:
    """The sequences a data spec describes, for a model with ``config`` (the spec is
    checked first with :func:`check_data_spec`)."""
    check_data_spec(spec, config)
    if spec["source"] == "synthetic":
        from patterning_core.data.synthetic import SYNTHETIC_PRESETS, generate

        syn = SYNTHETIC_PRESETS[spec.get("preset", "bench")]
        n = int(spec.get("n_seqs", 20000))
        seed = int(spec.get("seed", 0))
        train, _ = generate(syn, n, seed=seed)
        val, _ = generate(syn, max(64, n // 50), seed=seed + 1_000_003)
        return LMTokens(train, val, [f"<{i}>" for i in range(syn.d_vocab)])
    from patterning_core.data.corpus import prepare_lm_data

    data = prepare_lm_data(
        config.n_ctx,
        config.d_vocab,
        paths=spec.get("paths"),
        max_contexts=spec.get("max_contexts"),
        whitespace=spec.get("whitespace", "merged"),
    )
    train = data.train
    outline = float(spec.get("outline", 0.0))
    outline_rows = None
    if outline:
        from patterning_core.data.outline import outline_sequences

        m = synthetic_count(train.shape[0], outline)
        outline_rows = (train.shape[0], train.shape[0] + m)
        train = torch.cat([train, outline_sequences(data.tokenizer, m, config.n_ctx)])
    if spec.get("collapse_spaces", False):
        train = collapse_space_runs(train, data.token_strings)
        outline_rows = None
    n_corpus = train.shape[0]
    train = mix_in_context_bigrams(train, float(spec.get("in_context_bigrams", 0.0)), config)
    return LMTokens(
        train,
        data.val,
        data.token_strings,
        n_synthetic=train.shape[0] - n_corpus,
        tokenizer=data.tokenizer,
        outline_rows=outline_rows,
    )


def collapse_space_runs(train: Tensor, strings: list[str]) -> Tensor:
    """``train [N, T]`` with every run of space tokens (``" "``) cut to its first space:
    the sequences are read as one stream (they keep stream order), the repeated spaces
    dropped, and the stream cut again into ``[N', T]`` windows (``N' < N``; the remainder
    dropped). Needs a tokenizer that keeps spaces apart (``whitespace="split"``)."""
    space = [i for i, s in enumerate(strings) if s == " "]
    if len(space) != 1:
        raise ConfigError(
            "collapse_spaces needs exactly one token for a single space; tokenize with "
            "{'whitespace': 'split'}."
        )
    stream = train.reshape(-1)
    is_space = stream == space[0]
    repeated = is_space & torch.cat([torch.zeros(1, dtype=torch.bool), is_space[:-1]])
    kept = stream[~repeated]
    T = train.shape[1]
    return kept[: len(kept) // T * T].view(-1, T).clone()


def synthetic_count(n_corpus: int, fraction: float) -> int:
    """``M = round(N·f / (1 − f))``: the synthetic sequences that make up ``fraction`` of a
    training set with ``n_corpus`` corpus sequences."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    return round(n_corpus * fraction / (1.0 - fraction))


def mix_in_context_bigrams(
    corpus_train: Tensor, fraction: float, config: TransformerConfig, seed: int = 0
) -> Tensor:
    """``corpus_train [N, T]`` followed by synthetic in-context-bigram sequences making up
    ``fraction`` of the result: ``int64 [N + M, T]``, ``M = round(N·f / (1 − f))``.

    Why: on the default corpus the canonical induction circuit does not form within a CPU's
    minutes of training (measured: none after 33M tokens at context 64 or 22M at context 256;
    docs/results/induction_demo/). The synthetic sequences (``synthetic.py``, the ``bench``
    generator: per-sequence 16-token alphabets, a random successor map followed with
    probability 0.7, planted copies) reward exactly the previous-token + induction head pair,
    and the circuit it builds is the one the corpus uses too (measured on repeated corpus
    text in the report). Synthetic token ids are arbitrary ids of the model's vocabulary.
    The order of the result does not matter: training shuffles by its seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    if fraction == 0.0:
        return corpus_train
    from patterning_core.data.synthetic import synthetic_like

    m = synthetic_count(len(corpus_train), fraction)
    synthetic, _ = synthetic_like(config.d_vocab, corpus_train.shape[1], m, seed=seed)
    return torch.cat([corpus_train, synthetic])


def select_sequences(tokens: Tensor, n: int, seed: int) -> Tensor:
    """``n`` sequences drawn without replacement by a seeded permutation (all if fewer)."""
    if n >= tokens.shape[0]:
        return tokens
    g = torch.Generator().manual_seed(seed)
    return tokens[torch.randperm(tokens.shape[0], generator=g)[:n].sort().values]


SYNTHETIC_PROBE_SEED = 10_000  # + probe_seed: the synthetic probes are not training sequences


OUTLINE_PROBE_SEED = 987_654  # + probe_seed: outline training text uses seed 0


def workload_probes(
    val: Tensor, spec: Mapping, d_vocab: int | None = None, tokenizer=None
) -> Tensor:
    """The probe sequences of a transformer workload ``spec`` from the validation sequences
    ``val [N, T]``: ``probe_seqs`` of them (seed ``probe_seed``), and with ``probe_repeat``
    = f > 0 the second half of a seeded fraction f of them replaced by a copy of the first
    half (natural text that repeats, where copying predicts the second copy; the other
    sequences keep their own second half, so positions are balanced). With
    ``probe_synthetic`` = k > 0, k synthetic in-context-bigram sequences
    (``synthetic.synthetic_like``, the generator of the training mix, seed
    ``SYNTHETIC_PROBE_SEED + probe_seed``: not the training ones) follow the natural ones,
    so that χ is also measured on the kind of sequence that ``in_context_bigrams`` mixes into
    training (``d_vocab``: the model's vocabulary, needed then). With ``probe_outline`` = k
    > 0, k held-out outline sequences (``outline.outline_sequences``, seed
    ``OUTLINE_PROBE_SEED + probe_seed``, encoded with ``tokenizer``, the corpus's) come
    last, so that χ is also measured where counting a run predicts the next token."""
    seed = int(spec.get("probe_seed", 0))
    probes = select_sequences(val, int(spec.get("probe_seqs", 8)), seed=seed)
    probes = repeat_halves(probes, float(spec.get("probe_repeat", 0.0)), seed=seed)
    outline = _outline_probes(spec, probes.shape[1], tokenizer, seed)
    if outline is not None:
        probes = torch.cat([probes, outline])
    k = int(spec.get("probe_synthetic", 0))
    if k < 0:
        raise ValueError(f"probe_synthetic must be a number of sequences >= 0, got {k}.")
    if k == 0:
        return probes
    if d_vocab is None:
        raise ValueError("probe_synthetic needs the model's d_vocab.")
    from patterning_core.data.synthetic import synthetic_like

    synthetic, _ = synthetic_like(d_vocab, probes.shape[1], k, seed=SYNTHETIC_PROBE_SEED + seed)
    return torch.cat([probes, synthetic.to(probes.dtype)])


def probe_kinds(spec: Mapping) -> np.ndarray:
    """What each probe sequence of :func:`workload_probes` is, in its order: ``"corpus"``
    (``probe_seqs``), then ``"outline"`` (``probe_outline``), then ``"synthetic"``
    (``probe_synthetic``); ``str [P]``."""
    counts = [
        ("corpus", int(spec.get("probe_seqs", 8))),
        ("outline", int(spec.get("probe_outline", 0))),
        ("synthetic", int(spec.get("probe_synthetic", 0))),
    ]
    return np.array([kind for kind, k in counts for _ in range(max(k, 0))], dtype=object)


def _outline_probes(spec: Mapping, n_ctx: int, tokenizer, seed: int) -> Tensor | None:
    """The ``probe_outline`` held-out outline sequences ``[k, n_ctx]`` (None for none)."""
    k = int(spec.get("probe_outline", 0))
    if k < 0:
        raise ValueError(f"probe_outline must be a number of sequences >= 0, got {k}.")
    if k == 0:
        return None
    if tokenizer is None:
        raise ValueError("probe_outline needs corpus data (the corpus's tokenizer).")
    from patterning_core.data.outline import outline_sequences

    return outline_sequences(tokenizer, k, n_ctx, seed=OUTLINE_PROBE_SEED + seed)


def repeat_halves(seqs: Tensor, share: float, seed: int = 0) -> Tensor:
    """A copy of ``seqs [B, T]`` where ``round(share·B)`` rows, chosen by a seeded
    permutation, have tokens ``[T//2, 2·(T//2))`` replaced by tokens ``[0, T//2)``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"probe_repeat must be a fraction in [0, 1], got {share}.")
    out = seqs.clone()
    k = round(share * seqs.shape[0])
    if k == 0:
        return out
    half = seqs.shape[1] // 2
    rows = torch.randperm(seqs.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
    out[rows, half : 2 * half] = seqs[rows, :half]
    return out


def unit_labels(probes: Tensor, token_strings: list[str]) -> dict[str, np.ndarray]:
    """Labels of the per-token units of ``probes [B, T]``, flattened row-major ``[B·(T−1)]``.

    Unit (b, t) is the prediction of token t + 1 from tokens ≤ t; it is labelled by that
    token: its sequence, position (t + 1), id, text and primary pattern class.
    """
    classes = for_units(classify(probes, token_strings).primary())
    target = probes[:, 1:]
    B, U = target.shape
    seq, pos = np.meshgrid(np.arange(B), np.arange(1, U + 1), indexing="ij")
    ids = target.numpy().ravel()
    return {
        "sequence": seq.ravel(),
        "position": pos.ravel(),
        "token_id": ids,
        "token_text": np.array([token_strings[i] for i in ids], dtype=object),
        "pattern_class": np.array(
            [PRIMARY_CLASSES[c] for c in classes.numpy().ravel()], dtype=object
        ),
    }
