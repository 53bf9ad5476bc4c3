"""A small causal transformer that classifies bracket strings as balanced or not.

Input ``tokens [B, T]`` (``parentheses.encode``: ``BOS s EOS PAD…``). Architecture: token and
learned position embeddings, ``n_layers`` pre-LayerNorm transformer blocks with causal
multi-head attention and a ReLU MLP (exactly ``torch.nn.TransformerEncoderLayer`` with
``norm_first=True``, no dropout), a final LayerNorm, and a linear readout at the EOS position
giving one logit per string. Causal attention lets each position see its prefix, so both
rules are expressible (Equal-Count: the fraction of opens seen at EOS; Nested additionally:
whether some prefix fraction fell below ½).

Two forwards with the same parameter names:

- ``ParenClassifier`` (``torch.nn`` layers), the eager reference;
- ``logits_fn(params, tokens, cfg)`` / ``make_loss_fn(cfg)``: pure tensor functions of a
  ``{name: tensor}`` dict, no in-place ops and no host syncs, so ``run_sgld`` can ``vmap``
  them over chains.

Loss convention: per-example binary cross-entropy with logits, ``loss_fn(params, (tokens,
labels)) -> [B]``, label 1 = balanced. Training with weights ρ minimizes Σρℓ/Σρ per batch.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patterning_core.experiments.parentheses.strings import EOS, VOCAB_SIZE
from patterning_core.sampling.sgld import LossFn

Params = dict[str, Tensor]


@dataclass(frozen=True)
class ParenModelConfig:
    """Shape of the classifier.

    Attributes:
        seq_len: token positions (``ParenDataConfig.seq_len`` = max_len + 2).
        d_model: residual width.
        n_layers: transformer blocks.
        n_heads: attention heads per block (``d_model`` must be a multiple).
        d_mlp: hidden width of each block's MLP.
        ln_eps: LayerNorm epsilon.
    """

    seq_len: int = 18
    d_model: int = 16
    n_layers: int = 2
    n_heads: int = 2
    d_mlp: int = 32
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}.")

    def replace(self, **changes: object) -> ParenModelConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ParenTrainConfig:
    """Optimization settings: AdamW with a constant learning rate, seeded minibatch order.

    Attributes:
        steps: optimizer steps.
        batch_size: strings per step (one seeded permutation of the data per epoch).
        lr: Adam learning rate.
        weight_decay: AdamW decoupled weight decay.
    """

    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0

    def replace(self, **changes: object) -> ParenTrainConfig:
        return dataclasses.replace(self, **changes)


class ParenClassifier(nn.Module):
    """The eager reference model; ``forward(tokens [B, T]) -> logits [B]``."""

    def __init__(self, cfg: ParenModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.d_model)
        self.pos_embed = nn.Parameter(0.1 * torch.randn(cfg.seq_len, cfg.d_model))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.d_model,
                cfg.n_heads,
                cfg.d_mlp,
                dropout=0.0,
                activation="relu",
                layer_norm_eps=cfg.ln_eps,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.readout = nn.Linear(cfg.d_model, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos_embed[:T]
        mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=True)
        h = (self.norm(x) * (tokens == EOS).to(x.dtype).unsqueeze(-1)).sum(dim=1)
        return self.readout(h).squeeze(-1)


_GLOBAL_RNG = threading.Lock()


def init_params(cfg: ParenModelConfig, seed: int) -> Params:
    """PyTorch's default initialization of ``ParenClassifier``, seeded (global RNG untouched).

    The initialization draws from torch's global generator (forked, then restored), so one
    thread at a time: seeds trained in parallel threads get the same values as in sequence.
    """
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = ParenClassifier(cfg)
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def load_module(cfg: ParenModelConfig, params: Mapping[str, Tensor]) -> ParenClassifier:
    """A ``ParenClassifier`` holding ``params``."""
    module = ParenClassifier(cfg)
    module.load_state_dict(dict(params), strict=True)
    return module.eval()


def _attention(p: Mapping[str, Tensor], x: Tensor, cfg: ParenModelConfig) -> Tensor:
    B, T, d = x.shape
    H = cfg.n_heads
    qkv = F.linear(x, p["self_attn.in_proj_weight"], p["self_attn.in_proj_bias"])
    q, k, v = (t.reshape(B, T, H, d // H).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)  # [B, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    scores = torch.where(causal, scores, torch.full_like(scores, -math.inf))
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
    return F.linear(out, p["self_attn.out_proj.weight"], p["self_attn.out_proj.bias"])


def _block(p: Mapping[str, Tensor], x: Tensor, cfg: ParenModelConfig) -> Tensor:
    d = (cfg.d_model,)
    h = F.layer_norm(x, d, p["norm1.weight"], p["norm1.bias"], cfg.ln_eps)
    x = x + _attention(p, h, cfg)
    h = F.layer_norm(x, d, p["norm2.weight"], p["norm2.bias"], cfg.ln_eps)
    h = F.relu(F.linear(h, p["linear1.weight"], p["linear1.bias"]))
    return x + F.linear(h, p["linear2.weight"], p["linear2.bias"])


def logits_fn(params: Mapping[str, Tensor], tokens: Tensor, cfg: ParenModelConfig) -> Tensor:
    """Functional forward: ``tokens [B, T]`` → logits ``[B]`` (> 0: balanced)."""
    T = tokens.shape[1]
    x = F.embedding(tokens, params["embed.weight"]) + params["pos_embed"][:T]
    for i in range(cfg.n_layers):
        prefix = f"layers.{i}."
        layer = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        x = _block(layer, x, cfg)
    x = F.layer_norm(x, (cfg.d_model,), params["norm.weight"], params["norm.bias"], cfg.ln_eps)
    h = (x * (tokens == EOS).to(x.dtype).unsqueeze(-1)).sum(dim=1)
    return F.linear(h, params["readout.weight"], params["readout.bias"]).squeeze(-1)


def make_loss_fn(cfg: ParenModelConfig) -> LossFn:
    """``loss_fn(params, (tokens [B, T], labels [B])) -> [B]`` per-string BCE (vmap-safe)."""

    def loss_fn(params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        tokens, labels = batch[0], batch[1]
        logits = logits_fn(params, tokens, cfg)
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")

    return loss_fn


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``[steps, batch_size]`` data indices: one seeded permutation of ``0..n-1`` per epoch,
    consumed in order (a batch never straddles two epochs). Depends only on the arguments."""
    rng = np.random.default_rng([seed, 7])
    per_epoch = max(1, n // batch_size)
    epochs = -(-steps // per_epoch)
    rows = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        rows.extend(perm[i * batch_size : (i + 1) * batch_size] for i in range(per_epoch))
    return np.stack(rows[:steps])


def train_classifier(
    data: tuple[Tensor, Tensor],
    model_cfg: ParenModelConfig,
    train_cfg: ParenTrainConfig,
    seed: int,
    weights: Tensor | None = None,
) -> tuple[Params, list[float]]:
    """Train from ``init_params(model_cfg, seed)`` on ``data = (tokens [N, T], labels [N])``.

    Each step minimizes ``Σ_b ρ_b ℓ_b / Σ_b ρ_b`` over its batch (plain mean without
    ``weights``; ``weights [N] ≥ 0``). The data order depends only on ``(seed, N,
    batch_size)``, so runs with the same seed and different ρ see the same batches from the
    same start. Returns the trained parameters and the unweighted batch loss per step.
    """
    tokens, labels = data
    n = tokens.shape[0]
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (n,) or bool((weights < 0).any()):
            raise ValueError("weights must be [N] and non-negative.")
    loss_fn = make_loss_fn(model_cfg)
    params = {k: v.clone().requires_grad_(True) for k, v in init_params(model_cfg, seed).items()}
    opt = torch.optim.AdamW(
        list(params.values()), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay
    )
    order = torch.from_numpy(batch_order(n, train_cfg.batch_size, train_cfg.steps, seed))
    history = []
    for idx in order:
        losses = loss_fn(params, (tokens[idx], labels[idx]))
        if weights is None:
            objective = losses.mean()
        else:
            rho = weights[idx]
            objective = (rho * losses).sum() / rho.sum().clamp_min(1e-12)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        history.append(float(losses.detach().mean()))
    return {k: v.detach() for k, v in params.items()}, history


def predict_balanced(
    params: Mapping[str, Tensor], tokens: Tensor, cfg: ParenModelConfig, chunk: int = 2048
) -> np.ndarray:
    """``[N]`` bool, True where the model says "balanced" (logit > 0)."""
    out = []
    with torch.no_grad():
        for i in range(0, tokens.shape[0], chunk):
            out.append(logits_fn(params, tokens[i : i + chunk], cfg) > 0)
    return torch.cat(out).numpy()
