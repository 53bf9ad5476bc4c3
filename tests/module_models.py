"""Plain ``nn.Module`` models for the ``module`` model kind, importable by import string
(``"tests.module_models:build_classifier"``) in the test process and its Dask workers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_classifier(d_in: int = 3, hidden: int = 8, classes: int = 4, seed: int = 0) -> nn.Module:
    """``x [B, d_in] -> logits [B, classes]``: Linear, tanh, Linear (names ``0.*``, ``2.*``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def unit_loss(forward, batch):
    """Per-example cross-entropy ``[B]`` of ``batch = (x [B, d_in], y int64 [B])``."""
    x, y = batch
    return F.cross_entropy(forward(x), y, reduction="none")


def mean_loss(forward, batch):
    """The batch's mean cross-entropy: a scalar, not per unit (a wrong loss)."""
    x, y = batch
    return F.cross_entropy(forward(x), y)


def not_a_module(**config):
    return {"weights": None}


class Scaled(nn.Module):
    """A linear map with a buffer its forward reads (``scale``) and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), 2.0))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        return self.lin(x) * self.scale


def build_scaled() -> nn.Module:
    return Scaled()


def scaled_loss(forward, batch):
    """Per-example squared norm of the output ``[B]``."""
    return forward(batch[0]).pow(2).sum(-1)
