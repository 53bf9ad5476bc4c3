"""Pattern classes on hand-written examples."""

from __future__ import annotations

import pytest
import torch

from patterning_core.data.token_classes import (
    PRIMARY_CLASSES,
    class_counts,
    classify,
    for_units,
    induction_mask,
)

# A toy vocabulary in the style of byte-level BPE tokens (leading space kept in the text).
VOCAB = [
    "<|endoftext|>",  # 0
    "def",  # 1
    " foo",  # 2
    "_",  # 3
    "bar",  # 4
    "(",  # 5
    "x",  # 6
    "):",  # 7
    "\n    ",  # 8
    " return",  # 9
    " +",  # 10
    " ",  # 11
    "1",  # 12
    ",",  # 13
    "ing",  # 14
    " walk",  # 15
    "\n",  # 16
    "\ufffd",  # 17 (partial UTF-8)
    "  ",  # 18
]


def _ids(*pieces: str) -> torch.Tensor:
    return torch.tensor([VOCAB.index(p) for p in pieces])


def _labels(tokens: torch.Tensor) -> list[str]:
    return [PRIMARY_CLASSES[i] for i in classify(tokens, VOCAB).primary().tolist()]


def test_induction_mask_hand_examples() -> None:
    # A B C A B D A B C: bigram (A,B) repeats at 4 and 7, (B,C) at 8; (D,A) at 6 is new.
    t = torch.tensor([[1, 2, 3, 1, 2, 4, 1, 2, 3]])
    assert induction_mask(t)[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 1]
    # The same token twice is not enough: the bigram ending at it must repeat.
    t = torch.tensor([[5, 1, 6, 1, 7, 1]])
    assert not induction_mask(t).any()
    # Overlapping run: A A A -> bigram (A,A) at 1 and 2.
    assert induction_mask(torch.tensor([[9, 9, 9]]))[0].tolist() == [0, 0, 1]
    # Each sequence of a batch is its own context.
    t = torch.tensor([[1, 2, 1, 2], [1, 2, 3, 4]])
    assert induction_mask(t).tolist() == [[0, 0, 0, 1], [0, 0, 0, 0]]


def test_word_segmentation_classes() -> None:
    # "def foo_bar(x):\n    return foo"
    tokens = _ids("def", " foo", "_", "bar", "(", "x", "):", "\n    ", " return", " walk", "ing")
    assert _labels(tokens) == [
        "word_start",  # def (whole word)
        "word_start",  # " foo" starts foo_bar
        "word_part",  # _
        "word_end",  # bar
        "bracket",  # (
        "word_start",  # x (single-token word)
        "bracket",  # ):  (a delimiter with a bracket)
        "whitespace",
        "word_start",
        "word_start",  # " walk" + "ing"
        "word_end",
    ]
    c = classify(tokens, VOCAB)
    assert c.whitespace_len.tolist() == [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]
    assert c.delimiter.tolist() == [False] * 4 + [True, False, True] + [False] * 4


def test_whitespace_and_delimiters() -> None:
    tokens = _ids(" +", " ", "1", ",", "  ", "\n", "\ufffd", "<|endoftext|>")
    c = classify(tokens, VOCAB)
    assert c.whitespace_len.tolist() == [0, 1, 0, 0, 2, 1, 0, 0]
    assert c.delimiter.tolist() == [True, False, False, True, False, False, False, False]
    assert not c.bracket.any()
    # U+FFFD (partial UTF-8) is no delimiter; "<|endoftext|>" is punctuation and letters: other.
    assert _labels(tokens)[-2:] == ["other", "other"]


def test_induction_takes_precedence_and_unit_alignment() -> None:
    tokens = _ids(" foo", "_", "bar", "\n", " foo", "_", "bar")
    labels = _labels(tokens)
    assert labels == [
        "word_start",
        "word_part",
        "word_end",
        "whitespace",
        "word_start",
        "induction",
        "induction",
    ]
    c = classify(tokens[None], VOCAB)
    units = c.for_units()
    assert units.induction.shape == (1, 6)
    # Unit t predicts token t+1: units 4 and 5 predict the two induction tokens.
    assert units.induction[0].tolist() == [False, False, False, False, True, True]
    assert torch.equal(for_units(c.word_end), c.word_end[:, 1:])
    counts = class_counts(c)
    assert counts["induction"] == 2 and sum(counts.values()) == 7


def test_bad_ids_are_named() -> None:
    with pytest.raises(ValueError, match=r"\[0, 19\)"):
        classify(torch.tensor([0, 19]), VOCAB)
