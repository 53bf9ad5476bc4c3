"""How data weights are spread over context positions, and weights that keep every
position's total.

Weights ρ ``[N, T − 1]`` (one per loss unit; unit ``(b, t)`` predicts token t + 1 from the
first t + 1 tokens) that are functions of in-context features (how often the preceding token
occurred before, how recently, …) inherit a dependence on the position t: those features
grow with it. Induction only pays later in the context, so a weighting that moves weight
between early and late positions could move formation whatever χ it was computed from
(measured on the ``induce_wide`` substrate: the profiles of two χ weightings, alone, moved
formation by −5 % and +10 %, not enough to explain what the weightings did;
``scripts/induce_formation_levers.py``). These helpers measure that profile
(:func:`position_profile`, :func:`profile_summary`), build the weights that carry the profile
alone (:func:`position_only_weights`, the control for it), and remove it from an
intervention (:func:`balance_positions`).
"""

from __future__ import annotations

import numpy as np


def position_profile(weights: np.ndarray) -> np.ndarray:
    """``float64 [T − 1]``: the mean weight at each context position over the ``N``
    sequences of ``weights [N, T − 1]``, divided by the overall mean (1 everywhere for a
    weighting that does not depend on position)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be [N, T - 1], got shape {list(w.shape)}")
    return w.mean(axis=0) / w.mean()


def profile_summary(profile: np.ndarray) -> dict[str, float]:
    """``first_quarter`` and ``last_quarter``: the profile's mean over the first and the last
    quarter of the positions; ``late_over_early``: their ratio (> 1: later positions weigh
    more)."""
    p = np.asarray(profile, dtype=np.float64)
    q = max(1, p.size // 4)
    first, last = float(p[:q].mean()), float(p[-q:].mean())
    return {"first_quarter": first, "last_quarter": last, "late_over_early": last / first}


def position_only_weights(profile: np.ndarray, n_sequences: int) -> np.ndarray:
    """``float32 [n_sequences, T − 1]``: every sequence weighted by ``profile`` (mean 1):
    the position dependence of a weighting without anything else it carries."""
    p = np.asarray(profile, dtype=np.float64)
    p = p / p.mean()
    return np.broadcast_to(p, (n_sequences, p.size)).astype(np.float32)


def balance_positions(dh_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Remove the position dependence of an intervention dh: subtract from every unit the
    training units' mean dh at its position (``dh_train [N, T − 1]``; ``others``: more
    arrays of units ``[..., T − 1]`` or flat ``[M·(T − 1)]`` in row-major order, e.g. the
    probes', centred by the *training* means so they follow the same rule). ρ = 1 + α·dh is
    then, before clipping at 0, 1 on average at every position. Returns the centred
    ``dh_train`` followed by the centred ``others``."""
    train = np.asarray(dh_train, dtype=np.float64)
    if train.ndim != 2:
        raise ValueError(f"dh_train must be [N, T - 1], got shape {list(train.shape)}")
    means = train.mean(axis=0)
    out = [train - means]
    for other in others:
        arr = np.asarray(other, dtype=np.float64)
        flat = arr.reshape(-1, means.size)
        out.append((flat - means).reshape(arr.shape))
    return tuple(out)
