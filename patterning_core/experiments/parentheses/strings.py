"""Bracket strings for the algorithm-selection demonstration (method.md §7).

Two rules decide whether a string over ``(`` and ``)`` is balanced:

- **Nested**: every prefix has #open ≥ #close, and the counts end equal (a Dyck word);
- **Equal-Count**: #open = #close.

Nested implies Equal-Count, so the rules disagree exactly on the strings with equal counts
that are not nested. Training strings are only those on which the rules agree:

- *balanced* (label 1): nested strings, drawn uniformly among the Dyck words of each length
  (cycle lemma);
- *unbalanced* (label 0): strings with unequal counts (so neither rule calls them balanced).
  Their count gap |#open − #close| is drawn uniformly from ``count_gaps``; a share
  ``never_negative_share`` of them are excess-open strings whose prefix balance never goes
  negative (only the final count tells them from a nested string), the rest are uniform
  arrangements of their opens and closes (most of which go negative somewhere, so a
  "some prefix is negative" feature also flags them).

The out-of-distribution (OOD) set holds strings with equal counts that are not nested,
uniform among such arrangements: a Nested model calls them unbalanced, an Equal-Count model
balanced. All lengths are even (an odd length is unbalanced under both rules for a trivial
reason) and lie in ``[min_len, max_len]``, uniformly over the even lengths.

Per-string features (``string_features``), used to group strings into data units:
``length``, ``max_depth`` (largest prefix balance), ``min_prefix`` (smallest prefix balance,
the empty prefix included, so ≤ 0; 0 for nested strings), ``num_open``, ``count_gap``
(#open − #close).

Token encoding (``encode``): ``BOS s_1 … s_L EOS PAD …``, with ``(`` = 0, ``)`` = 1, PAD = 2,
BOS = 3, EOS = 4; ``[N, max_len + 2]`` int64. The classifier reads its answer at EOS.

Everything is deterministic given the configuration's seed (``numpy.random.default_rng``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

OPEN, CLOSE, PAD, BOS, EOS = 0, 1, 2, 3, 4
VOCAB_SIZE = 5
FEATURES = ("length", "max_depth", "min_prefix", "num_open", "count_gap")


def prefix_balances(s: str) -> np.ndarray:
    """``[len(s) + 1]`` running #open − #close, starting with 0 for the empty prefix."""
    steps = np.array([1 if c == "(" else -1 for c in s], dtype=np.int64)
    if any(c not in "()" for c in s):
        raise ValueError(f"bracket strings hold only '(' and ')', got {s!r}.")
    return np.concatenate([[0], np.cumsum(steps)])


def is_nested(s: str) -> bool:
    """Nested rule: every prefix has #open ≥ #close and the counts end equal."""
    b = prefix_balances(s)
    return bool(b.min() >= 0 and b[-1] == 0)


def is_equal_count(s: str) -> bool:
    """Equal-Count rule: #open = #close."""
    return bool(prefix_balances(s)[-1] == 0)


def string_features(s: str) -> dict[str, int]:
    """``length, max_depth, min_prefix, num_open, count_gap`` of one string (see module doc)."""
    b = prefix_balances(s)
    return {
        "length": len(s),
        "max_depth": int(b.max()),
        "min_prefix": int(b.min()),
        "num_open": s.count("("),
        "count_gap": int(b[-1]),
    }


@dataclass(frozen=True)
class ParenDataConfig:
    """How the training and OOD sets are drawn.

    Attributes:
        min_len, max_len: even string lengths, inclusive; lengths are uniform over the even
            values in between.
        n_train: training strings.
        balanced_share: share of training strings that are balanced (nested).
        never_negative_share: share of the unbalanced strings whose prefix balance never
            goes negative (excess opens); the rest are uniform arrangements.
        count_gaps: allowed |#open − #close| of unbalanced strings (even, ≥ 2), uniform.
        n_ood: OOD strings (equal counts, not nested).
        seed: seed of every draw.
    """

    min_len: int = 8
    max_len: int = 16
    n_train: int = 1024
    balanced_share: float = 0.5
    never_negative_share: float = 0.5
    count_gaps: tuple[int, ...] = (2, 4)
    n_ood: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_len < 2 or self.min_len % 2 or self.max_len % 2 or self.max_len < self.min_len:
            raise ValueError(
                f"lengths must be even with 2 ≤ min_len ≤ max_len, got "
                f"{self.min_len}..{self.max_len}."
            )
        if not self.count_gaps or any(g < 2 or g % 2 for g in self.count_gaps):
            raise ValueError(f"count_gaps must be even values ≥ 2, got {self.count_gaps}.")
        if max(self.count_gaps) > self.min_len:
            raise ValueError("every count gap must fit the shortest length (gap ≤ min_len).")
        for name in ("balanced_share", "never_negative_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}.")
        if self.n_train < 2 or self.n_ood < 1:
            raise ValueError("need n_train ≥ 2 and n_ood ≥ 1.")

    def replace(self, **changes: object) -> ParenDataConfig:
        return dataclasses.replace(self, **changes)

    @property
    def seq_len(self) -> int:
        """Token positions per encoded string: BOS + max_len + EOS."""
        return self.max_len + 2


@dataclass(frozen=True)
class ParenDataset:
    """A list of bracket strings with labels and features.

    Attributes:
        strings: the strings.
        labels: ``[N]`` float, 1 = balanced under the rule the set is labelled by (for
            training strings both rules agree; OOD strings carry the Nested label, 0).
        features: ``{name: [N] int64}`` for each name in ``FEATURES``.
        kinds: ``[N]`` str, how each string was drawn (``nested``, ``never_negative``,
            ``arrangement``, ``ood``).
    """

    strings: list[str]
    labels: np.ndarray
    features: dict[str, np.ndarray]
    kinds: np.ndarray

    def __len__(self) -> int:
        return len(self.strings)

    def tensors(self, max_len: int) -> tuple[Tensor, Tensor]:
        """``(tokens [N, max_len + 2] int64, labels [N] float32)`` for the classifier."""
        return encode(self.strings, max_len), torch.as_tensor(self.labels, dtype=torch.float32)


def encode(strings: Sequence[str], max_len: int) -> Tensor:
    """``[N, max_len + 2]`` int64 tokens ``BOS s EOS PAD…`` (see module doc)."""
    out = np.full((len(strings), max_len + 2), PAD, dtype=np.int64)
    for i, s in enumerate(strings):
        if len(s) > max_len:
            raise ValueError(f"string of length {len(s)} exceeds max_len {max_len}.")
        out[i, 0] = BOS
        out[i, 1 : 1 + len(s)] = [OPEN if c == "(" else CLOSE for c in s]
        out[i, 1 + len(s)] = EOS
    return torch.from_numpy(out)


def _to_string(steps: np.ndarray) -> str:
    return "".join("(" if x > 0 else ")" for x in steps)


def random_dyck_word(length: int, rng: np.random.Generator) -> str:
    """A uniform random nested string of even ``length`` (cycle lemma).

    A uniform arrangement of n opens and n + 1 closes has exactly one rotation that is a
    Dyck word followed by ``)``: the rotation starting just after the first position where
    the prefix balance reaches its minimum.
    """
    n = length // 2
    steps = rng.permutation(np.array([1] * n + [-1] * (n + 1)))
    balance = np.cumsum(steps)
    start = int(np.argmin(balance)) + 1  # first minimum
    rotated = np.roll(steps, -start)
    return _to_string(rotated[:-1])


def random_arrangement(length: int, num_open: int, rng: np.random.Generator) -> str:
    """A uniform random string with ``num_open`` opens among ``length`` brackets."""
    steps = np.array([1] * num_open + [-1] * (length - num_open))
    return _to_string(rng.permutation(steps))


def random_never_negative(length: int, gap: int, rng: np.random.Generator) -> str:
    """A uniform string with #open − #close = ``gap`` > 0 whose prefixes never go negative.

    Rejection from uniform arrangements; the acceptance rate is (gap + 1)/(#open + 1) by the
    ballot theorem, at least 1/(length/2 + 1).
    """
    num_open = (length + gap) // 2
    while True:
        s = random_arrangement(length, num_open, rng)
        if prefix_balances(s).min() >= 0:
            return s


def random_equal_not_nested(length: int, rng: np.random.Generator) -> str:
    """A uniform string with equal counts that is not nested (rejection; accept ≥ 1/2)."""
    while True:
        s = random_arrangement(length, length // 2, rng)
        if not is_nested(s):
            return s


def _lengths(cfg: ParenDataConfig, count: int, rng: np.random.Generator) -> np.ndarray:
    choices = np.arange(cfg.min_len, cfg.max_len + 1, 2)
    return rng.choice(choices, size=count)


def _dataset(strings: list[str], labels: np.ndarray, kinds: list[str]) -> ParenDataset:
    feats = [string_features(s) for s in strings]
    features = {k: np.array([f[k] for f in feats], dtype=np.int64) for k in FEATURES}
    return ParenDataset(strings, labels.astype(np.float64), features, np.array(kinds))


def make_training_set(cfg: ParenDataConfig) -> ParenDataset:
    """Training strings on which the rules agree (see module doc), in a seeded random order."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_bal = round(cfg.n_train * cfg.balanced_share)
    n_unbal = cfg.n_train - n_bal
    n_never = round(n_unbal * cfg.never_negative_share)
    strings, kinds = [], []
    for length in _lengths(cfg, n_bal, rng):
        strings.append(random_dyck_word(int(length), rng))
        kinds.append("nested")
    for i, length in enumerate(_lengths(cfg, n_unbal, rng)):
        gap = int(rng.choice(cfg.count_gaps))
        if i < n_never:
            strings.append(random_never_negative(int(length), gap, rng))
            kinds.append("never_negative")
        else:
            sign = 1 if rng.random() < 0.5 else -1
            strings.append(random_arrangement(int(length), (int(length) + sign * gap) // 2, rng))
            kinds.append("arrangement")
    labels = np.array([1.0] * n_bal + [0.0] * n_unbal)
    order = rng.permutation(len(strings))
    return _dataset([strings[i] for i in order], labels[order], [kinds[i] for i in order])


def make_ood_set(cfg: ParenDataConfig) -> ParenDataset:
    """Equal-count strings that are not nested; label 0 (the Nested rule's answer)."""
    rng = np.random.default_rng([cfg.seed, 1])
    strings = [random_equal_not_nested(int(n), rng) for n in _lengths(cfg, cfg.n_ood, rng)]
    return _dataset(strings, np.zeros(len(strings)), ["ood"] * len(strings))


# --- grouping strings into data units -------------------------------------------------------


def default_group_key(features: dict[str, int], label: float) -> str:
    """The data unit of one training string.

    Balanced strings by nesting depth (1–2, 3, ≥ 4). Unbalanced strings that never go
    negative (only the final count separates them from nested strings) by count gap (2, ≥ 4)
    and length (short: ≤ 12, long: > 12); unbalanced strings that do go negative somewhere
    by the sign of the count gap (excess opens, excess closes).
    """
    if label > 0.5:
        depth = features["max_depth"]
        return "bal:depth" + ("1-2" if depth <= 2 else "3" if depth == 3 else "4+")
    if features["min_prefix"] >= 0:
        gap = "gap2" if features["count_gap"] == 2 else "gap4+"
        size = "short" if features["length"] <= 12 else "long"
        return f"unbal:never-neg:{gap}:{size}"
    return "unbal:goes-neg:" + ("open+" if features["count_gap"] > 0 else "close+")


GroupKey = Callable[[dict[str, int], float], str]


def group_units(
    data: ParenDataset, key: GroupKey = default_group_key
) -> tuple[np.ndarray, list[str]]:
    """``(group index [N] int64, group names)``; names sorted, every group non-empty."""
    keys = [
        key({k: int(v[i]) for k, v in data.features.items()}, float(data.labels[i]))
        for i in range(len(data))
    ]
    names = sorted(set(keys))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[k] for k in keys], dtype=np.int64), names
