"""The toy model of superposition and its finite training set.

Model (Elhage et al. 2022): n features, m hidden dimensions, x̂ = ReLU(WᵀW x + b) with
W ∈ ℝ^{m×n}, b ∈ ℝ^n; per-sample loss ℓ_z = Σ_i I_i (x_{z,i} − x̂_{z,i})² with importances
I_i. A sample has each feature active independently with probability ``active_prob``, at a
value uniform on [0, 1]. The training set is a fixed draw of ``n_samples`` such samples:
every sample is a data unit, and a re-weighting ρ (mean 1) trains on Σ_z ρ_z ℓ_z / N.

Seeds differ only in the initialization of W (i.i.d. normal, std ``init_std``; b = 0);
the data and its order (full batch) are the same for every seed. Many seeds train at once
as one batched tensor W ∈ ℝ^{S×m×n}, with the gradient written out by hand (no autograd):
with G = WᵀW, pre = xG + b, r = ReLU(pre) − x and δ = 2·I·r·1[pre > 0]·ρ_z/N,

    ∂L/∂G = xᵀδ,   ∂L/∂b = Σ_z δ,   ∂L/∂W = W (∂L/∂G + ∂L/∂Gᵀ).

Each seed's trajectory depends only on its own weights (no quantity is shared between
seeds), so a seed gives the same configuration whichever batch it trains in; its
initialization is drawn from its own generator. One seed of 600 full-batch steps on 512
samples costs well under 0.1 s when 100 train together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ToyConfig",
    "importances",
    "init_weights",
    "make_dataset",
    "per_sample_loss",
    "seed_batched_loss",
    "train_seeds",
]


@dataclass(frozen=True)
class ToyConfig:
    """The setting: model, data and training recipe (see the module docstring).

    ``importance_decay``: I_i = decay^i (feature 0 the most important). The default setting
    was chosen so that feature 4 is represented by about 40 % of baseline seeds (see the
    report for the scan).
    """

    n_features: int = 6
    hidden: int = 2
    active_prob: float = 0.1
    n_samples: int = 512
    importance_decay: float = 0.9
    data_seed: int = 0
    init_std: float = 0.1
    lr: float = 0.1
    momentum: float = 0.9
    steps: int = 600
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.n_features < 2 or self.hidden < 1 or self.hidden >= self.n_features:
            raise ValueError("need n_features >= 2 and 1 <= hidden < n_features")
        if not 0 < self.active_prob <= 1:
            raise ValueError(f"active_prob must lie in (0, 1], got {self.active_prob}")
        if self.n_samples < 1 or self.steps < 0:
            raise ValueError("n_samples must be >= 1 and steps >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ToyConfig:
        return dataclasses.replace(self, **changes)


def importances(cfg: ToyConfig, dtype: torch.dtype = torch.float32) -> Tensor:
    """I_i = importance_decay^i, ``[n]``."""
    return cfg.importance_decay ** torch.arange(cfg.n_features, dtype=dtype)


def make_dataset(cfg: ToyConfig, dtype: torch.dtype = torch.float32) -> Tensor:
    """The training set ``[N, n]``: each feature active w.p. ``active_prob``, value U[0, 1]."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    active = torch.rand(cfg.n_samples, cfg.n_features, generator=g, dtype=torch.float64)
    values = torch.rand(cfg.n_samples, cfg.n_features, generator=g, dtype=torch.float64)
    return ((active < cfg.active_prob) * values).to(dtype)


def init_weights(
    cfg: ToyConfig, seeds: Sequence[int], dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(W [S, m, n], b [S, n])`` at initialization; seed s draws W from its own generator."""
    ws = []
    for s in seeds:
        g = torch.Generator().manual_seed(10_000 + int(s))
        ws.append(torch.randn(cfg.hidden, cfg.n_features, generator=g, dtype=torch.float64))
    W = torch.stack(ws).to(dtype) * cfg.init_std
    return W, torch.zeros(len(seeds), cfg.n_features, dtype=dtype)


def per_sample_loss(W: Tensor, b: Tensor, x: Tensor, imp: Tensor) -> Tensor:
    """ℓ_z for every seed: ``W [..., m, n]``, ``b [..., n]``, ``x [N, n]`` → ``[..., N]``."""
    gram = W.transpose(-1, -2) @ W
    recon = torch.relu(x @ gram + b.unsqueeze(-2))
    return ((recon - x) ** 2 * imp).sum(-1)


def train_seeds(
    cfg: ToyConfig,
    x: Tensor,
    seeds: Sequence[int],
    weights: Tensor | None = None,
    steps: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Train ``seeds`` together by full-batch SGD with heavy-ball momentum.

    Args:
        weights: ρ ``[N]`` (rescaled here to mean 1); None is uniform.
        steps: override ``cfg.steps`` (e.g. an early checkpoint).

    Returns ``(W [S, m, n], b [S, n])`` after ``steps`` updates, float32.
    """
    n_steps = cfg.steps if steps is None else steps
    x = x.to(torch.float32)
    n = x.shape[0]
    imp = importances(cfg)
    rho = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if rho.shape != (n,) or bool((rho < 0).any()) or float(rho.sum()) <= 0:
        raise ValueError("weights must be [N], non-negative, with a positive sum")
    scale = (2.0 * rho / rho.mean() / n)[None, :, None] * imp  # [1, N, n]
    W, b = init_weights(cfg, seeds)
    xt = x.T.contiguous()
    vel_w, vel_b = torch.zeros_like(W), torch.zeros_like(b)
    for _ in range(n_steps):
        pre = x @ (W.transpose(1, 2) @ W) + b[:, None]
        delta = (pre.clamp_min(0) - x) * (pre > 0) * scale
        d_gram = xt @ delta
        grad_w = W @ (d_gram + d_gram.transpose(1, 2))
        vel_w.mul_(cfg.momentum).add_(grad_w)
        vel_b.mul_(cfg.momentum).add_(delta.sum(1))
        W -= cfg.lr * vel_w
        b -= cfg.lr * vel_b
    return W, b


def seed_batched_loss(imp: Tensor):
    """The model of K independent seeds as one ``loss_fn(params, batch) -> [B]`` for the
    samplers, with observable rows.

    ``params = {"W": [K, m, n], "b": [K, n]}``; a batch is ``(x [B, n], kind [B])``. A row
    with ``kind = -1`` is a training sample and gets Σ_k ℓ_z(W_k, b_k): the *sum* over
    seeds, so the tempered posterior exp(−nβ Σ_k L(w_k) − γ/2 ‖w − w*‖²) is the product of
    the K seeds' own posteriors at the same nβ (independent copies). A row with
    ``kind = i ≥ 0`` ignores x and gets the observable (1/K) Σ_k ‖W_k[:, i]‖, the
    representation norm of feature i averaged over the seeds. SGLD only ever sees sample
    rows; observable rows are evaluated at the draws, which is how χ of the norms is read
    through the sampler's ``evaluate``.
    """

    def loss_fn(params: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        x, kind = batch
        W, b = params["W"], params["b"]
        losses = per_sample_loss(W, b, x, imp.to(x.dtype)).sum(0)
        norms = torch.linalg.vector_norm(W, dim=-2).mean(0)
        return torch.where(kind < 0, losses, norms[kind.clamp(min=0)])

    return loss_fn
