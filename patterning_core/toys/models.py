"""Small models with known answers, in the functional form the samplers take.

Each ``make_*`` returns ``(loss_fn, params, data)``: ``loss_fn(params, batch) -> [B]``
per-example losses, ``params`` the point w* to sample around, ``data`` a tuple of tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from patterning_core.sampling.sgld import LossFn


def make_polynomial_regression(
    powers: tuple[int, int],
    n: int = 1000,
    seed: int = 0,
    x_std: float = 2.0,
    noise_std: float = 0.25,
    dtype: torch.dtype = torch.float64,
) -> tuple[LossFn, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """f(x) = x·w1^p1·w2^p2 with y independent of x (true function 0), squared error.

    Per-example loss ℓ_i(w) = (y_i − x_i·w1^p1·w2^p2)², w* = (0, 0). The LLC at w* tends
    to 1/(2·max(p1, p2)) as n grows (method.md §4).
    """
    g = torch.Generator().manual_seed(seed)
    x = x_std * torch.randn(n, generator=g, dtype=torch.float64)
    y = noise_std * torch.randn(n, generator=g, dtype=torch.float64)
    p1, p2 = powers

    def loss_fn(params: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        xb, yb = batch
        w = params["w"]
        return (yb - xb * w[0] ** p1 * w[1] ** p2) ** 2

    params = {"w": torch.zeros(2, dtype=dtype)}
    return loss_fn, params, (x.to(dtype), y.to(dtype))


def make_linear_regression(
    n: int = 200,
    d: int = 3,
    seed: int = 0,
    noise_std: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> tuple[LossFn, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """y = X·w_true + noise with loss ℓ_i(w) = ½(y_i − x_iᵀw)², w* the least-squares fit.

    The localized tempered posterior is Gaussian: precision nβ·XᵀX/n + γI, mean w*.
    """
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w_true + noise_std * torch.randn(n, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)

    def loss_fn(params: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        xb, yb = batch
        return 0.5 * (yb - xb @ params["w"]) ** 2

    return loss_fn, {"w": w_star.to(dtype)}, (X.to(dtype), y.to(dtype))


def make_mlp_regression(
    n: int = 512,
    d_in: int = 8,
    hidden: int = 32,
    seed: int = 0,
    train_steps: int = 300,
) -> tuple[LossFn, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """A one-hidden-layer tanh MLP fitted (Adam) to a smooth target; float32.

    Used by the demo and the speed benchmark: a realistic small network whose LLC and
    susceptibilities are cheap to estimate.
    """
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g)
    y = torch.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * torch.randn(n, generator=g)
    params = {
        "w1": torch.randn(d_in, hidden, generator=g) / math.sqrt(d_in),
        "b1": torch.zeros(hidden),
        "w2": torch.randn(hidden, generator=g) / math.sqrt(hidden),
        "b2": torch.zeros(()),
    }

    def loss_fn(p: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        xb, yb = batch
        pred = torch.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return 0.5 * (yb - pred) ** 2

    trainable = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    for _ in range(train_steps):
        opt.zero_grad()
        loss_fn(trainable, (X, y)).mean().backward()
        opt.step()
    return loss_fn, {k: v.detach() for k, v in trainable.items()}, (X, y)
