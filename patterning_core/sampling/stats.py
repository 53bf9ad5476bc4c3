"""Streaming co-moments of a scalar observable φ with a vector of unit losses x.

Per group (one chain of one run) we keep, in float64:

    count n, mean_φ, M2_φ = Σ(φ − mean_φ)², mean_x[u], C[u] = Σ(φ − mean_φ)(x_u − mean_x[u])

updated one draw at a time (Welford) and pooled exactly across groups with Chan et al.'s
formulas. Memory is O(groups × units), independent of the number of draws, and statistics
computed on different machines pool to the same numbers as one run over all the draws.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class CoMomentAccumulator:
    """Welford accumulation of (φ, x) pairs for ``groups`` independent groups.

    Shapes: φ is ``[groups]``, x is ``[groups, units]``; the statistics have the same
    leading ``[groups]`` axis.
    """

    def __init__(self, groups: int, units: int, device: torch.device | str = "cpu"):
        kw = {"dtype": torch.float64, "device": device}
        self.count = torch.zeros(groups, **kw)
        self.mean_phi = torch.zeros(groups, **kw)
        self.m2_phi = torch.zeros(groups, **kw)
        self.mean_x = torch.zeros(groups, units, **kw)
        self.comoment = torch.zeros(groups, units, **kw)

    def update(self, phi: Tensor, x: Tensor) -> None:
        phi = phi.to(torch.float64)
        x = x.to(torch.float64)
        self.count += 1
        d_phi = phi - self.mean_phi
        self.mean_phi += d_phi / self.count
        self.m2_phi += d_phi * (phi - self.mean_phi)
        self.mean_x += (x - self.mean_x) / self.count[:, None]
        self.comoment += d_phi[:, None] * (x - self.mean_x)

    def numpy(self) -> dict[str, np.ndarray]:
        return {
            "count": self.count.cpu().numpy(),
            "mean_phi": self.mean_phi.cpu().numpy(),
            "m2_phi": self.m2_phi.cpu().numpy(),
            "mean_x": self.mean_x.cpu().numpy(),
            "comoment": self.comoment.cpu().numpy(),
        }


class MeanAccumulator:
    """Running means of a ``[groups, units]`` quantity (Welford, float64)."""

    def __init__(self, groups: int, units: int, device: torch.device | str = "cpu"):
        self.count = torch.zeros(groups, dtype=torch.float64, device=device)
        self.mean = torch.zeros(groups, units, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        self.count += 1
        self.mean += (x.to(torch.float64) - self.mean) / self.count[:, None]


def pool_comoments(
    count: np.ndarray,
    mean_phi: np.ndarray,
    m2_phi: np.ndarray,
    mean_x: np.ndarray,
    comoment: np.ndarray,
    axis: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool groups along ``axis`` exactly (Chan et al.'s pairwise formulas, k-way form).

    ``count, mean_phi, m2_phi`` have the group axis at ``axis``; ``mean_x, comoment`` have
    it at the same position followed by a trailing units axis. Returns the pooled
    ``(count, mean_phi, m2_phi, mean_x, comoment)`` with ``axis`` removed.
    """
    n = count.sum(axis=axis)
    n_kept = np.expand_dims(n, axis)
    weights = count / np.where(n_kept == 0, 1, n_kept)
    pooled_phi = (weights * mean_phi).sum(axis=axis)
    pooled_x = (weights[..., None] * mean_x).sum(axis=axis)
    d_phi = mean_phi - np.expand_dims(pooled_phi, axis)
    d_x = mean_x - np.expand_dims(pooled_x, axis)
    m2 = m2_phi.sum(axis=axis) + (count * d_phi * d_phi).sum(axis=axis)
    co = comoment.sum(axis=axis) + (count[..., None] * d_phi[..., None] * d_x).sum(axis=axis)
    return n, pooled_phi, m2, pooled_x, co


def pool_means(count: np.ndarray, mean: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool count-weighted means along ``axis`` (``mean`` may carry trailing axes)."""
    n = count.sum(axis=axis)
    n_kept = np.expand_dims(n, axis)
    weights = count / np.where(n_kept == 0, 1, n_kept)
    extra = mean.ndim - count.ndim
    w = weights.reshape(weights.shape + (1,) * extra)
    return n, (w * mean).sum(axis=axis)
