"""Offline text corpus, byte-level BPE tokenizer (cached), train/validation contexts.

Default corpus: the Python standard library's own ``.py`` source files, found from the running
interpreter (``sysconfig.get_paths()["stdlib"]``), without ``site-packages``/``dist-packages``,
test suites (``test``, ``tests``, ``idle_test`` folders) and ``__pycache__``: about 11 MB of real
code written by others, rich in repeated identifiers and whitespace runs, present on every
machine. Its exact content depends on the Python version, so everything derived from it is
keyed by its sha256 :attr:`Corpus.digest`. Users can pass their own files or folders instead.

Pipeline (:func:`prepare_lm_data`):

1. documents (UTF-8 text files, sorted by name) -> :class:`Corpus`;
2. a byte-level BPE tokenizer (the ``tokenizers`` library) trained on the corpus with the chosen
   vocabulary size, special token ``<|endoftext|>`` = id 0; cached under
   ``$PATTERNING_HOME/tokenizers`` keyed by corpus digest and settings;
3. the token stream: every document's tokens followed by ``<|endoftext|>``, cached under
   ``$PATTERNING_HOME/corpora``;
4. fixed-length contexts: the stream cut into consecutive non-overlapping windows of ``n_ctx``
   tokens (the remainder dropped);
5. a deterministic split: a seeded permutation of the contexts; the first ``val_fraction`` go to
   validation, the rest (in stream order) to training.

``$PATTERNING_HOME`` defaults to ``./.patterning``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from patterning_core.workspace import patterning_home

EOT = "<|endoftext|>"
EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
_TOKENIZER_FORMAT = "patterning.bpe/1"


@dataclass(frozen=True)
class Document:
    """One text file: its name (path relative to its root) and content."""

    name: str
    text: str


@dataclass
class Corpus:
    """An ordered list of documents with a content digest."""

    documents: list[Document]
    source: str = ""

    @cached_property
    def digest(self) -> str:
        """sha256 over every document's name and UTF-8 bytes, in order."""
        h = hashlib.sha256()
        for doc in self.documents:
            data = doc.text.encode("utf-8")
            h.update(f"{len(doc.name)}:{doc.name}:{len(data)}:".encode())
            h.update(data)
        return h.hexdigest()

    @property
    def n_chars(self) -> int:
        return sum(len(d.text) for d in self.documents)


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def default_corpus_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the standard library (see the module docstring), sorted."""
    root = stdlib_dir() if root is None else root
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_text(path: Path) -> str | None:
    """The file's text if it is UTF-8 text without NUL bytes, else None."""
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def default_corpus() -> Corpus:
    """The standard-library corpus (files that are not valid UTF-8 are skipped)."""
    root = stdlib_dir()
    docs = []
    for path in default_corpus_files(root):
        text = _read_text(path)
        if text:
            docs.append(Document(path.relative_to(root).as_posix(), text))
    if not docs:
        raise RuntimeError(
            f"no Python source files found under {root}; this interpreter ships without its "
            "standard-library sources: pass your own text files or folders instead"
        )
    return Corpus(docs, source=f"python-stdlib:{root}")


def collect_text_files(
    paths: Sequence[str | os.PathLike[str]], suffixes: Sequence[str] | None = None
) -> list[tuple[Path, Path]]:
    """``(root, file)`` pairs for the given files and folders (folders walked recursively,
    hidden entries skipped, ``suffixes`` e.g. ``[".py", ".txt"]`` filters file names)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(
                f"corpus path {path} does not exist; pass existing text files or folders "
                "(or no paths for the default standard-library corpus)"
            )
        if path.is_file():
            out.append((path.parent, path))
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                if suffixes is not None and not name.endswith(tuple(suffixes)):
                    continue
                out.append((path, Path(dirpath) / name))
    return out


def _no_text_error(
    paths: Sequence[str | os.PathLike[str]], skipped: int, suffixes: Sequence[str] | None
) -> ValueError:
    filt = f", suffix filter {list(suffixes)}" if suffixes else ""
    return ValueError(
        f"no UTF-8 text found in {[str(p) for p in paths]} ({skipped} empty, binary or "
        f"non-UTF-8 files skipped{filt}); "
        "point at text files or folders that contain some"
    )


def check_corpus_paths(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    suffixes: Sequence[str] | None = None,
) -> None:
    """Check, before any work, that ``paths`` exist and hold some UTF-8 text (reading files
    only until the first one that does). Raises as :func:`load_corpus` would."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skipped = 0
    for _, path in collect_text_files(paths, suffixes):
        if _read_text(path):
            return
        skipped += 1
    raise _no_text_error(paths, skipped, suffixes)


def load_corpus(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    suffixes: Sequence[str] | None = None,
) -> Corpus:
    """The default corpus (``paths=None``) or the UTF-8 text files found under ``paths``.

    Binary and non-UTF-8 files are skipped; if nothing readable is left that is a ``ValueError``.
    """
    if paths is None:
        return default_corpus()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    docs = []
    skipped = 0
    for root, path in collect_text_files(paths, suffixes):
        text = _read_text(path)
        if text:
            docs.append(Document(path.relative_to(root).as_posix(), text))
        else:
            skipped += 1
    if not docs:
        raise _no_text_error(paths, skipped, suffixes)
    docs.sort(key=lambda d: d.name)
    return Corpus(docs, source=",".join(str(p) for p in paths))


# ----------------------------------------------------------------------------- tokenizer


def _cache_key(**parts: object) -> str:
    import tokenizers

    parts = {**parts, "format": _TOKENIZER_FORMAT, "tokenizers": tokenizers.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


WHITESPACE_MODES = ("merged", "split")


def _new_tokenizer(
    vocab_size: int, min_frequency: int, whitespace: str = "merged"
):  # -> (Tokenizer, BpeTrainer)
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if whitespace == "split":
        # every whitespace character its own pre-token, so no merge can join two of them
        # (a run of n spaces is n tokens) or a space and a word
        isolate = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([isolate, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def train_tokenizer(
    corpus: Corpus,
    vocab_size: int,
    min_frequency: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    whitespace: str = "merged",
):
    """A byte-level BPE ``tokenizers.Tokenizer`` with at most ``vocab_size`` tokens.

    ``<|endoftext|>`` has id 0, the 256 byte symbols come next, then merges. Cached as JSON in
    ``cache_dir`` (default ``$PATTERNING_HOME/tokenizers``) keyed by corpus digest and settings.

    ``whitespace``: ``"merged"`` (GPT-2's byte-level rule: a run of spaces, or a newline and
    the indentation after it, becomes one token) or ``"split"`` (every whitespace character
    is a token of its own, so a run of n spaces is n tokens and a token's position within
    its run can be read; what the spacing fin lives on).
    """
    if whitespace not in WHITESPACE_MODES:
        raise ValueError(f"whitespace must be one of {WHITESPACE_MODES}, got {whitespace!r}")
    from tokenizers import Tokenizer

    if vocab_size < 257:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs 256 byte tokens "
            "plus <|endoftext|>; use vocab_size >= 257"
        )
    cache = Path(cache_dir) if cache_dir is not None else patterning_home() / "tokenizers"
    settings = {"vocab_size": vocab_size, "min_frequency": min_frequency}
    if whitespace != "merged":  # the default keeps the cache keys it always had
        settings["whitespace"] = whitespace
    key = _cache_key(corpus=corpus.digest, **settings)
    path = cache / f"bpe-{key}.json"
    if use_cache and path.is_file():
        return Tokenizer.from_file(str(path))
    tok, trainer = _new_tokenizer(vocab_size, min_frequency, whitespace)
    texts = [d.text for d in corpus.documents]
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tok.save(str(tmp))
        os.replace(tmp, path)
    return tok


def tokenizer_digest(tokenizer) -> str:
    """sha256 of the tokenizer's JSON serialization."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def token_strings(tokenizer) -> list[str]:
    """Decoded text of every token id (``[id] -> str``; partial UTF-8 shows as U+FFFD)."""
    n = tokenizer.get_vocab_size()
    return [tokenizer.decode([i], skip_special_tokens=False) for i in range(n)]


def encode_corpus(
    corpus: Corpus,
    tokenizer,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Tensor:
    """The token stream ``int64 [n_tokens]``: each document's tokens then ``<|endoftext|>``.

    Cached in ``cache_dir`` (default ``$PATTERNING_HOME/corpora``) keyed by corpus and tokenizer.
    """
    cache = Path(cache_dir) if cache_dir is not None else patterning_home() / "corpora"
    key = _cache_key(corpus=corpus.digest, tokenizer=tokenizer_digest(tokenizer))
    path = cache / f"tokens-{key}.safetensors"
    if use_cache and path.is_file():
        cached = _load_cached_tokens(path)
        if cached is not None:
            return cached
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise ValueError(f"tokenizer has no {EOT} token; train it with train_tokenizer()")
    encodings = tokenizer.encode_batch([d.text for d in corpus.documents])
    ids: list[int] = []
    for enc in encodings:
        ids.extend(enc.ids)
        ids.append(eot)
    stream = torch.tensor(ids, dtype=torch.long)
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file({"tokens": stream}, str(tmp))
        os.replace(tmp, path)
    return stream


def _load_cached_tokens(path: Path) -> Tensor | None:
    """The cached token stream, or None (with a warning) if the file is not a valid
    safetensors file of one; it is then recomputed and replaced. Never unpickles."""
    try:
        return load_file(str(path))["tokens"]
    except (SafetensorError, KeyError) as err:
        warnings.warn(
            f"ignoring unreadable token cache {path} ({err!r}); recomputing it",
            stacklevel=3,
        )
        return None


def make_contexts(stream: Tensor, n_ctx: int, max_contexts: int | None = None) -> Tensor:
    """Consecutive non-overlapping windows ``int64 [N, n_ctx]`` (remainder dropped)."""
    n = len(stream) // n_ctx
    if max_contexts is not None:
        n = min(n, max_contexts)
    if n < 1:
        raise ValueError(
            f"the token stream has {len(stream)} tokens, fewer than one context of {n_ctx}; "
            "use more text or a shorter context"
        )
    return stream[: n * n_ctx].view(n, n_ctx).clone()


def split_contexts(
    contexts: Tensor, val_fraction: float = 0.02, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Deterministic ``(train, val)`` split of contexts; each part keeps stream order.

    ``val`` gets ``max(1, round(val_fraction * N))`` contexts when ``val_fraction > 0`` and
    ``N >= 2``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    N = len(contexts)
    n_val = 0 if val_fraction == 0 or N < 2 else max(1, round(val_fraction * N))
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(N, generator=gen)
    val_idx = perm[:n_val].sort().values
    train_idx = perm[n_val:].sort().values
    return contexts[train_idx], contexts[val_idx]


@dataclass
class LMData:
    """Tokenized corpus ready for training."""

    train: Tensor  # int64 [N_train, n_ctx]
    val: Tensor  # int64 [N_val, n_ctx]
    tokenizer: object  # tokenizers.Tokenizer
    corpus_digest: str
    corpus_source: str
    n_tokens: int
    info: dict = field(default_factory=dict)

    @cached_property
    def token_strings(self) -> list[str]:
        return token_strings(self.tokenizer)


def prepare_lm_data(
    n_ctx: int,
    vocab_size: int,
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    suffixes: Sequence[str] | None = None,
    val_fraction: float = 0.02,
    split_seed: int = 0,
    max_contexts: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    whitespace: str = "merged",
) -> LMData:
    """Corpus -> cached tokenizer -> cached token stream -> contexts -> split (module docs).

    ``cache_dir`` (default ``$PATTERNING_HOME``) gets ``tokenizers/`` and ``corpora/``;
    ``whitespace``: see :func:`train_tokenizer`.
    """
    corpus = load_corpus(paths, suffixes)
    root = Path(cache_dir) if cache_dir is not None else patterning_home()
    tok = train_tokenizer(corpus, vocab_size, cache_dir=root / "tokenizers", whitespace=whitespace)
    stream = encode_corpus(corpus, tok, cache_dir=root / "corpora")
    contexts = make_contexts(stream, n_ctx, max_contexts)
    train, val = split_contexts(contexts, val_fraction, split_seed)
    return LMData(
        train=train,
        val=val,
        tokenizer=tok,
        corpus_digest=corpus.digest,
        corpus_source=corpus.source,
        n_tokens=len(stream),
        info={
            "n_documents": len(corpus.documents),
            "n_chars": corpus.n_chars,
            "vocab_size": tok.get_vocab_size(),
        },
    )
