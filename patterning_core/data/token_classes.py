"""Pattern classes of every token in its context (to read and extrapolate per-token χ).

For ``tokens: int64 [B, T]`` and the decoded text of every token id, :func:`classify` returns
boolean masks ``[B, T]`` (position ``t`` describes token ``tokens[b, t]`` in the context
``tokens[b, : t + 1]``):

- ``induction``: the bigram ending at this token, ``(tokens[t-1], tokens[t])``, occurred earlier
  in the context, i.e. at some ``(s-1, s)`` with ``1 <= s < t``. (An induction head can predict
  ``tokens[t]`` by finding the earlier ``tokens[t-1]`` and copying what followed it.)
- word tokens: a token is a *word token* if its text, after leading whitespace, is non-empty and
  made only of word characters (letters, digits, ``_``). It *joins the previous token* if its
  text starts with a word character and the previous token's text ends with one; it *joins the
  next* if the next token's text starts with a word character. Then exactly one of
  ``word_start`` (does not join the previous token: first or only token of a word),
  ``word_part`` (joins both sides), ``word_end`` (joins the previous only: last token of a
  multi-token word) holds for each word token.
- ``whitespace``: the text is whitespace only (spaces, tabs, newlines); ``whitespace_len`` is its
  number of characters (0 elsewhere).
- ``delimiter``: the text, after leading whitespace, is non-empty punctuation/operator
  characters only (no word characters, no whitespace, no U+FFFD); ``bracket`` ⊂ ``delimiter``:
  it contains one of ``()[]{}``.

:meth:`PatternClasses.primary` gives one exclusive label per token with the precedence of
:data:`PRIMARY_CLASSES`. :func:`for_units` aligns any ``[B, T]`` class tensor with the loss units
``[B, T - 1]`` (unit ``(b, t)`` predicts token ``t + 1``, so it gets that token's class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

BRACKETS = frozenset("()[]{}")
PRIMARY_CLASSES = (
    "induction",
    "whitespace",
    "bracket",
    "delimiter",
    "word_start",
    "word_part",
    "word_end",
    "other",
)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


@dataclass(frozen=True)
class TokenKinds:
    """Per-vocabulary-id properties derived from the token texts (each a tensor ``[V]``)."""

    word: Tensor  # bool: word token
    starts_word_char: Tensor  # bool: text starts with a word character
    ends_word_char: Tensor  # bool: text ends with a word character
    whitespace_len: Tensor  # int64: length if whitespace-only, else 0
    delimiter: Tensor  # bool
    bracket: Tensor  # bool

    @classmethod
    def from_strings(cls, strings: Sequence[str]) -> TokenKinds:
        word, sw, ew, wl, de, br = [], [], [], [], [], []
        for s in strings:
            core = s.lstrip()
            is_word = bool(core) and all(_is_word_char(c) for c in core)
            word.append(is_word)
            sw.append(bool(s) and _is_word_char(s[0]))
            ew.append(bool(s) and _is_word_char(s[-1]))
            wl.append(len(s) if s and s.isspace() else 0)
            is_delim = bool(core) and all(
                not _is_word_char(c) and not c.isspace() and c != "\ufffd" for c in core
            )
            de.append(is_delim)
            br.append(is_delim and any(c in BRACKETS for c in core))
        return cls(
            word=torch.tensor(word, dtype=torch.bool),
            starts_word_char=torch.tensor(sw, dtype=torch.bool),
            ends_word_char=torch.tensor(ew, dtype=torch.bool),
            whitespace_len=torch.tensor(wl, dtype=torch.long),
            delimiter=torch.tensor(de, dtype=torch.bool),
            bracket=torch.tensor(br, dtype=torch.bool),
        )


@dataclass(frozen=True)
class PatternClasses:
    """Boolean masks ``[B, T]`` (``whitespace_len`` int64) — see the module docstring."""

    induction: Tensor
    word_start: Tensor
    word_part: Tensor
    word_end: Tensor
    whitespace: Tensor
    whitespace_len: Tensor
    delimiter: Tensor
    bracket: Tensor

    def primary(self) -> Tensor:
        """One label per token, int64 ``[B, T]``: index into :data:`PRIMARY_CLASSES`; the first
        class in that order that holds wins (``other`` if none)."""
        label = torch.full(self.induction.shape, len(PRIMARY_CLASSES) - 1, dtype=torch.long)
        for i in reversed(range(len(PRIMARY_CLASSES) - 1)):
            label = torch.where(getattr(self, PRIMARY_CLASSES[i]), i, label)
        return label

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def for_units(self) -> PatternClasses:
        """Every mask aligned with the loss units ``[B, T - 1]`` (see :func:`for_units`)."""
        return PatternClasses(**{k: for_units(v) for k, v in self.as_dict().items()})


def for_units(per_token: Tensor) -> Tensor:
    """``[B, T] -> [B, T - 1]``: unit ``(b, t)`` predicts token ``t + 1`` and gets its class."""
    return per_token[..., 1:]


def induction_mask(tokens: Tensor, chunk: int = 64) -> Tensor:
    """``bool [B, T]``: the bigram ending at position ``t`` occurred earlier in the context."""
    B, T = tokens.shape
    out = torch.zeros(B, T, dtype=torch.bool)
    if T < 3:
        return out
    for i in range(0, B, chunk):
        x = tokens[i : i + chunk]
        prev, cur = x[:, :-1], x[:, 1:]  # bigram (prev[j], cur[j]) ends at position j + 1
        same = (prev[:, :, None] == prev[:, None, :]) & (cur[:, :, None] == cur[:, None, :])
        earlier = torch.tril(same, diagonal=-1).any(dim=-1)  # [b, T-1]
        out[i : i + chunk, 1:] = earlier
    return out


def classify(tokens: Tensor, strings: Sequence[str] | TokenKinds) -> PatternClasses:
    """Pattern classes of ``tokens: int64 [B, T]`` (or ``[T]``, treated as one sequence).

    ``strings[i]`` is the decoded text of token id ``i`` (e.g.
    :func:`patterning_core.data.corpus.token_strings`), or precomputed :class:`TokenKinds`.
    """
    squeeze = tokens.ndim == 1
    if squeeze:
        tokens = tokens[None]
    kinds = strings if isinstance(strings, TokenKinds) else TokenKinds.from_strings(strings)
    V = len(kinds.word)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= V):
        raise ValueError(
            f"token ids must lie in [0, {V}) (one string per id), got "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )
    word = kinds.word[tokens]
    sw = kinds.starts_word_char[tokens]
    ew = kinds.ends_word_char[tokens]
    false = torch.zeros_like(word[:, :1])
    prev_ends = torch.cat([false, ew[:, :-1]], dim=1)
    next_starts = torch.cat([sw[:, 1:], false], dim=1)
    joins_prev = word & sw & prev_ends
    joins_next = word & next_starts
    ws_len = kinds.whitespace_len[tokens]
    result = PatternClasses(
        induction=induction_mask(tokens),
        word_start=word & ~joins_prev,
        word_part=joins_prev & joins_next,
        word_end=joins_prev & ~joins_next,
        whitespace=ws_len > 0,
        whitespace_len=ws_len,
        delimiter=kinds.delimiter[tokens],
        bracket=kinds.bracket[tokens],
    )
    if squeeze:
        result = PatternClasses(**{k: v[0] for k, v in result.as_dict().items()})
    return result


def class_counts(classes: PatternClasses) -> dict[str, int]:
    """Number of tokens per primary class."""
    label = classes.primary()
    return {name: int((label == i).sum()) for i, name in enumerate(PRIMARY_CLASSES)}
