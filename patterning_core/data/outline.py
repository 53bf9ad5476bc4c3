"""Synthetic outline text in which a line's indentation depth decides its next token.

A substrate for the spacing fin (a structure of χ ordering the spaces of a run by how far
into the run they are) that a model has to *learn*: in Python source a run of spaces is
mostly a multiple of four and the token after it says little about its length, so counting
spaces is barely rewarded. Here every line is

    <d spaces><marker of depth d> <1-3 words>

with one space per level, depth ``d`` in ``0 … max_depth`` moving by −1, 0 or +1 from the
line above (and back to 0 with probability ``restart``). The marker after the run names its
length exactly (``MARKERS[d]``), and whether a run goes on after k spaces depends on k
against the depth above: a model predicts both only by counting the run and comparing it
with the previous line's. Mixed into the corpus's training sequences (``data.outline``, a
fraction, see ``lm_data``) and tokenized with the corpus tokenizer (``whitespace: split``
keeps each space a token of its own); validation and probes stay corpus text.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["MARKERS", "WORDS", "outline_sequences", "outline_text"]

#: The marker that follows a run of d spaces (index d); single characters, none a space.
MARKERS = ["-", "*", "+", "o", "#", "=", "~", ">", "x", ":", "%", "@"]
WORDS = [
    "data", "model", "token", "value", "list", "index", "name", "file", "line", "item",
    "node", "tree", "path", "size", "count", "key", "text", "state", "step", "part",
]  # fmt: skip


def outline_text(
    n_lines: int, seed: int, max_depth: int = len(MARKERS) - 1, restart: float = 0.05
) -> str:
    """``n_lines`` outline lines (see the module docstring), newline-terminated."""
    if not 0 <= max_depth < len(MARKERS):
        raise ValueError(f"max_depth must lie in [0, {len(MARKERS) - 1}], got {max_depth}")
    rng = np.random.default_rng(seed)
    depth, lines = 0, []
    for _ in range(n_lines):
        if rng.random() < restart:
            depth = 0
        else:
            depth = int(np.clip(depth + rng.integers(-1, 2), 0, max_depth))
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        lines.append(" " * depth + MARKERS[depth] + " " + words)
    return "\n".join(lines) + "\n"


def outline_sequences(tokenizer, n_seqs: int, n_ctx: int, seed: int = 0) -> Tensor:
    """``int64 [n_seqs, n_ctx]``: outline text (:func:`outline_text`, seed ``seed``)
    encoded with ``tokenizer`` (a ``tokenizers.Tokenizer``) and cut into consecutive
    windows."""
    if n_seqs == 0:
        return torch.empty(0, n_ctx, dtype=torch.long)
    ids: list[int] = []
    chunk = 0
    while len(ids) < n_seqs * n_ctx:  # about 6 tokens per line at depth ~4
        text = outline_text(max(64, n_seqs * n_ctx // 6), seed=seed * 1_000 + chunk)
        ids.extend(tokenizer.encode(text).ids)
        chunk += 1
    return torch.tensor(ids[: n_seqs * n_ctx], dtype=torch.long).view(n_seqs, n_ctx)
