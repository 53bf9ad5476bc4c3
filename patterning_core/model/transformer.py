"""Attention-only transformer: config, presets, functional forward, ``loss_fn``, components.

Architecture (pre-LN, no MLPs)::

    x = W_E[tokens] + W_pos[:T]                         embed
    for l in layers:  x = x + attn_l(LN_l(x))           attention_layer
    logits = LN_final(x) @ W_U + b_U                    unembed

Parameter names and shapes (``H`` heads, ``D`` = d_model, ``d`` = d_head, ``V`` vocabulary,
``C`` context length)::

    embed.W_E            [V, D]
    pos.W_pos            [C, D]
    blocks.{l}.ln.w      [D]         blocks.{l}.ln.b   [D]
    blocks.{l}.attn.W_Q  [H, D, d]   blocks.{l}.attn.b_Q  [H, d]
    blocks.{l}.attn.W_K  [H, D, d]   blocks.{l}.attn.b_K  [H, d]
    blocks.{l}.attn.W_V  [H, D, d]   blocks.{l}.attn.b_V  [H, d]
    blocks.{l}.attn.W_O  [H, d, D]   blocks.{l}.attn.b_O  [D]
    ln_final.w           [D]         ln_final.b        [D]
    unembed.W_U          [D, V]      unembed.b_U       [V]

Head-major layout: head ``h`` of layer ``l`` is the slice ``[h]`` along dim 0 of
``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V``.

The functional forward takes ``params: dict[str, Tensor]`` (as ``dict(model.named_parameters())``)
and uses only pure tensor ops (no in-place ops, no ``.item()``, no data-dependent Python control
flow), so it runs under ``torch.func.vmap`` / ``grad`` with a leading chain dimension on any subset
of the parameters.

Sampling-API convention: :func:`make_loss_fn` returns ``loss_fn(params, (tokens,))`` with
``tokens: int64 [B, T]`` and output ``[B, T - 1]``, unit ``(b, t)`` being
``-log p(tokens[b, t + 1] | tokens[b, : t + 1])``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patterning_core.model.fused_loss import linear_cross_entropy

Params = dict[str, Tensor]
LossFn = Callable[[Mapping[str, Tensor], tuple[Tensor, ...]], Tensor]

# Name of the format of TransformerConfig.to_dict(); bump on incompatible changes.
CONFIG_FORMAT = "patterning.attn_only_transformer/1"


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of an attention-only transformer.

    Attributes:
        n_layers: number of attention layers.
        n_heads: heads per layer.
        d_model: residual stream width.
        d_head: width of each head's query/key/value space.
        n_ctx: context length (number of learned positions).
        d_vocab: vocabulary size.
        ln_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialization of every weight matrix and
            embedding (biases start at 0, LayerNorm gains at 1); None (default):
            ``0.8 / sqrt(d_model)``, the TransformerLens convention.
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    n_ctx: int
    d_vocab: int
    ln_eps: float = 1e-5
    init_std: float | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.n_ctx < 2:
            raise ValueError(
                f"TransformerConfig.n_ctx must be >= 2 (one loss unit), got {self.n_ctx}"
            )
        if not self.ln_eps > 0 or (self.init_std is not None and not self.init_std > 0):
            raise ValueError("TransformerConfig.ln_eps and init_std must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict, with a ``format`` tag (used in checkpoint metadata)."""
        return {"format": CONFIG_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; rejects unknown keys and foreign formats."""
        data = dict(data)
        fmt = data.pop("format", CONFIG_FORMAT)
        if fmt != CONFIG_FORMAT:
            raise ValueError(f"config format {fmt!r} is not {CONFIG_FORMAT!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig keys {unknown}; valid keys: {sorted(known)}"
            )
        return cls(**data)

    @property
    def weight_std(self) -> float:
        """The initialization standard deviation actually used."""
        return self.init_std if self.init_std is not None else 0.8 / math.sqrt(self.d_model)

    def n_params(self) -> int:
        """Total number of parameters."""
        return sum(math.prod(shape) for shape in param_shapes(self).values())


PRESETS: dict[str, TransformerConfig] = {
    # Unit tests: seconds on a CPU.
    "tiny": TransformerConfig(n_layers=2, n_heads=2, d_model=32, d_head=16, n_ctx=32, d_vocab=64),
    # Benchmark model (fixed spec): trained on synthetic in-context bigrams + planted copies.
    "bench": TransformerConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=64, d_vocab=512),
    # CPU demo on the default corpus (induction forms within minutes on 2 cores).
    "demo": TransformerConfig(n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=64, d_vocab=512),
    # The demo with a 256-token context: several lines of text, so that indentation can be
    # read off the lines above (the spacing fin's substrate with runs of spaces split).
    "demo_long": TransformerConfig(
        n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=256, d_vocab=512
    ),
    # ``demo_long`` with ``induce_wide``'s heads (d_model 128, d_head 16): the spacing fin's
    # substrate with more capacity (``demo_long`` learns no fin beyond its initialization's).
    "fin_wide": TransformerConfig(
        n_layers=2, n_heads=8, d_model=128, d_head=16, n_ctx=256, d_vocab=512
    ),
    # ``demo_long`` four layers deep: the spacing fin's substrate with more layers to count in
    # (neither ``demo_long`` nor ``fin_wide`` learns a fin beyond its initialization's).
    "fin_deep": TransformerConfig(
        n_layers=4, n_heads=8, d_model=64, d_head=8, n_ctx=256, d_vocab=512
    ),
    # Natural-text induction substrates with wider heads than ``demo`` (d_head 16 and 32,
    # the papers' head width): per-head χ at d_head 8 is one shared pattern across the
    # layer-1 heads (docs/results/induction_patterning/natural/mode_scan.md).
    "induce_wide": TransformerConfig(
        n_layers=2, n_heads=8, d_model=128, d_head=16, n_ctx=64, d_vocab=512
    ),
    "induce_paper_heads": TransformerConfig(
        n_layers=2, n_heads=8, d_model=256, d_head=32, n_ctx=64, d_vocab=512
    ),
    # The ~3M-parameter model of the papers (for a GPU).
    "paper": TransformerConfig(
        n_layers=2, n_heads=8, d_model=256, d_head=32, n_ctx=1024, d_vocab=5000
    ),
}


def preset(name: str) -> TransformerConfig:
    """The named preset config (``tiny``, ``bench``, ``demo``, ``demo_long``, ``fin_wide``,
    ``fin_deep``, ``induce_wide``, ``induce_paper_heads``, ``paper``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown transformer preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}"
        ) from None


def param_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, in the canonical order."""
    D, H, d, V, C = config.d_model, config.n_heads, config.d_head, config.d_vocab, config.n_ctx
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (V, D), "pos.W_pos": (C, D)}
    for layer in range(config.n_layers):
        p = f"blocks.{layer}."
        shapes[p + "ln.w"] = (D,)
        shapes[p + "ln.b"] = (D,)
        for m in "QKV":
            shapes[p + f"attn.W_{m}"] = (H, D, d)
        shapes[p + "attn.W_O"] = (H, d, D)
        for m in "QKV":
            shapes[p + f"attn.b_{m}"] = (H, d)
        shapes[p + "attn.b_O"] = (D,)
    shapes["ln_final.w"] = (D,)
    shapes["ln_final.b"] = (D,)
    shapes["unembed.W_U"] = (D, V)
    shapes["unembed.b_U"] = (V,)
    return shapes


def init_params(config: TransformerConfig, seed: int = 0) -> Params:
    """Fresh float32 parameters, a deterministic function of ``(config, seed)``.

    Weight matrices and embeddings ~ N(0, weight_std²); biases 0; LayerNorm gains 1.
    """
    gen = torch.Generator().manual_seed(seed)
    params: Params = {}
    for name, shape in param_shapes(config).items():
        leaf = name.rsplit(".", 1)[1]
        if leaf.startswith("W_"):
            params[name] = torch.randn(shape, generator=gen) * config.weight_std
        elif leaf == "w":
            params[name] = torch.ones(shape)
        else:
            params[name] = torch.zeros(shape)
    return params


def check_params(params: Mapping[str, Tensor], config: TransformerConfig) -> None:
    """Raise ``ValueError`` naming every missing, unexpected or mis-shaped parameter."""
    shapes = param_shapes(config)
    problems = []
    missing = [n for n in shapes if n not in params]
    extra = [n for n in params if n not in shapes]
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    for name, shape in shapes.items():
        if name in params and tuple(params[name].shape) != shape:
            problems.append(f"{name} has shape {tuple(params[name].shape)}, expected {shape}")
    if problems:
        raise ValueError(f"parameters do not match {config}: " + "; ".join(problems))


# ----------------------------------------------------------------------------- functional forward


def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim: ``(x - mean) / sqrt(var + eps) * w + b``."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(dim=-1, keepdim=True)
    return xc * torch.rsqrt(var + eps) * w + b


def embed(params: Mapping[str, Tensor], tokens: Tensor) -> Tensor:
    """Residual stream entering layer 0: ``W_E[tokens] + W_pos[:T]``, shape ``[B, T, D]``."""
    length, n_ctx = tokens.shape[-1], params["pos.W_pos"].shape[0]
    if length > n_ctx:
        raise ValueError(
            f"sequences of {length} tokens are longer than the model's context ({n_ctx}); "
            f"cut them to at most {n_ctx} tokens (or use a model with a longer context)."
        )
    return params["embed.W_E"][tokens] + params["pos.W_pos"][:length]


def attention_pattern(
    params: Mapping[str, Tensor], layer: int, resid: Tensor, config: TransformerConfig
) -> Tensor:
    """Attention probabilities of every head of ``layer``: ``[B, H, T_query, T_key]`` (causal)."""
    p = f"blocks.{layer}."
    x = layer_norm(resid, params[p + "ln.w"], params[p + "ln.b"], config.ln_eps)
    return _pattern(params, p, x)


def _project(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """``x [B, T, D]`` through head-major ``W [H, D, d]``, ``b [H, d]`` -> ``[B, H, T, d]``."""
    H, D, d = W.shape
    flat = x @ W.permute(1, 0, 2).reshape(D, H * d) + b.reshape(H * d)  # [B, T, H*d]
    return flat.reshape(*x.shape[:-1], H, d).transpose(-2, -3)


def _pattern(params: Mapping[str, Tensor], p: str, x: Tensor) -> Tensor:
    d_head = params[p + "attn.W_Q"].shape[-1]
    q = _project(x, params[p + "attn.W_Q"], params[p + "attn.b_Q"]) / math.sqrt(d_head)
    k = _project(x, params[p + "attn.W_K"], params[p + "attn.b_K"])
    T = x.shape[-2]
    mask = torch.full((T, T), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
    return torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``F.scaled_dot_product_attention`` (causal, scale 1/√d) on ``[..., T, d]`` inputs.

    The CPU flash kernel takes only 4-D inputs (other ranks fall back to a slow path), so
    leading dims are folded into the first: a view, not a copy, for the layouts used here.
    """
    if q.dim() == 4:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    lead = q.shape[:-3] if q.dim() > 4 else ()
    fold = [
        t.reshape(-1, *t.shape[-3:]) if t.dim() > 4 else t.reshape(1, -1, *t.shape[-2:])
        for t in (q, k, v)
    ]
    out = F.scaled_dot_product_attention(*fold, is_causal=True)
    return out.reshape(*lead, *q.shape[-3:]) if q.dim() > 4 else out.reshape(q.shape)


def attention_layer(
    params: Mapping[str, Tensor],
    layer: int,
    resid: Tensor,
    config: TransformerConfig,
    *,
    fused: bool = False,
) -> Tensor:
    """Residual stream after layer ``layer``: ``resid + attn(LN(resid))``, ``[..., T, D]``.

    ``fused=True`` computes the attention with ``F.scaled_dot_product_attention`` (same
    arithmetic up to float rounding, about 3× faster forward + backward on a CPU for small
    heads, but it has no ``vmap`` batching rule: use it outside ``torch.func`` transforms).
    """
    p = f"blocks.{layer}."
    x = layer_norm(resid, params[p + "ln.w"], params[p + "ln.b"], config.ln_eps)
    v = _project(x, params[p + "attn.W_V"], params[p + "attn.b_V"])
    if fused:
        q = _project(x, params[p + "attn.W_Q"], params[p + "attn.b_Q"])
        k = _project(x, params[p + "attn.W_K"], params[p + "attn.b_K"])
        z = causal_attention(q, k, v)
    else:
        z = _pattern(params, p, x) @ v  # [..., H, T, d]
    z = z.transpose(-2, -3)  # [..., T, H, d]
    W_O = params[p + "attn.W_O"]
    H, d, D = W_O.shape
    return resid + z.reshape(*z.shape[:-2], H * d) @ W_O.reshape(H * d, D) + params[p + "attn.b_O"]


def unembed(params: Mapping[str, Tensor], resid: Tensor, config: TransformerConfig) -> Tensor:
    """Logits ``LN_final(resid) @ W_U + b_U``: ``[B, T, V]``."""
    x = layer_norm(resid, params["ln_final.w"], params["ln_final.b"], config.ln_eps)
    return x @ params["unembed.W_U"] + params["unembed.b_U"]


def forward_from(
    params: Mapping[str, Tensor], resid: Tensor, start_layer: int, config: TransformerConfig
) -> Tensor:
    """Logits ``[B, T, V]`` from the residual stream ``resid`` entering layer ``start_layer``.

    With a cached ``resid = residual_before(params, tokens, l, config)`` this is the forward of
    a run that only moves weights of layers ``>= l`` (and the unembedding).
    """
    for layer in range(start_layer, config.n_layers):
        resid = attention_layer(params, layer, resid, config)
    return unembed(params, resid, config)


def residual_before(
    params: Mapping[str, Tensor], tokens: Tensor, layer: int, config: TransformerConfig
) -> Tensor:
    """Residual stream entering ``layer`` (``layer == n_layers``: entering the unembedding)."""
    resid = embed(params, tokens)
    for lyr in range(layer):
        resid = attention_layer(params, lyr, resid, config)
    return resid


def forward(params: Mapping[str, Tensor], tokens: Tensor, config: TransformerConfig) -> Tensor:
    """Logits ``[B, T, V]`` for ``tokens: int64 [B, T]`` (``T <= n_ctx``)."""
    return forward_from(params, embed(params, tokens), 0, config)


def per_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Next-token cross-entropy ``[B, T - 1]``.

    Unit ``(b, t)`` is ``-log p(tokens[b, t + 1] | tokens[b, : t + 1])``.
    """
    logp = torch.log_softmax(logits[..., :-1, :], dim=-1)
    target = tokens[..., 1:].unsqueeze(-1)
    return -torch.gather(logp, -1, target).squeeze(-1)


def loss_per_token(
    params: Mapping[str, Tensor],
    tokens: Tensor,
    config: TransformerConfig,
    *,
    fused: bool = False,
) -> Tensor:
    """Per-token losses ``[B, T - 1]`` (see :func:`per_token_loss`).

    ``fused=True`` runs the same arithmetic (equal up to float rounding) through the fused
    attention kernel and the chunked readout loss (:func:`next_token_loss`): much faster on
    long contexts (about 2.8× forward + backward at context 256 on one core, no gain at 64),
    not usable under ``torch.func`` transforms.
    """
    if not fused:
        return per_token_loss(forward(params, tokens, config), tokens)
    resid = embed(params, tokens)
    for layer in range(config.n_layers):
        resid = attention_layer(params, layer, resid, config, fused=True)
    return next_token_loss(params, resid, tokens, config)


def next_token_loss(
    params: Mapping[str, Tensor], resid: Tensor, tokens: Tensor, config: TransformerConfig
) -> Tensor:
    """``per_token_loss(unembed(params, resid, config), tokens)`` through the fused readout.

    ``resid [..., T, D]`` (the residual entering the unembedding), ``tokens [..., T]`` →
    ``[..., T - 1]``. The ``[..., T, V]`` logits are never held (``fused_loss``).
    """
    x = layer_norm(resid[..., :-1, :], params["ln_final.w"], params["ln_final.b"], config.ln_eps)
    targets = tokens[..., 1:]
    loss = linear_cross_entropy(
        x.reshape(-1, x.shape[-1]),
        params["unembed.W_U"],
        params["unembed.b_U"],
        targets.reshape(-1),
    )
    return loss.reshape(targets.shape)


def make_loss_fn(config: TransformerConfig) -> LossFn:
    """Pure ``loss_fn(params, (tokens,)) -> [B, T - 1]`` per-token losses (vmap-safe)."""

    def loss_fn(params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        (tokens,) = batch
        return loss_per_token(params, tokens, config)

    return loss_fn


def attention_patterns(
    params: Mapping[str, Tensor], tokens: Tensor, config: TransformerConfig
) -> list[Tensor]:
    """Attention probabilities per layer, each ``[B, H, T_query, T_key]``."""
    patterns = []
    resid = embed(params, tokens)
    for layer in range(config.n_layers):
        patterns.append(attention_pattern(params, layer, resid, config))
        resid = attention_layer(params, layer, resid, config)
    return patterns


# ----------------------------------------------------------------------------- components


def head_name(layer: int, head: int) -> str:
    """Component name of head ``head`` of layer ``layer``: ``"L{layer}H{head}"``."""
    return f"L{layer}H{head}"


HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


def components(
    config_or_model: TransformerConfig | AttnOnlyTransformer,
) -> dict[str, dict[str, Tensor]]:
    """Components as boolean masks, the form the sampling API takes.

    Returns ``{name: {param_name: BoolTensor of the parameter's full shape}}`` with

    - ``"L{l}H{h}"``: True on slice ``[h]`` of layer ``l``'s ``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V``
      (not ``b_O``, not LayerNorm);
    - ``"embed"``: all of ``embed.W_E`` and ``pos.W_pos`` (token and positional embeddings are
      one component: both write the residual stream entering layer 0);
    - ``"unembed"``: all of ``unembed.W_U`` and ``unembed.b_U`` (not ``ln_final``).

    Parameters a component does not touch are absent from its dict.
    """
    config = (
        config_or_model.config
        if isinstance(config_or_model, AttnOnlyTransformer)
        else config_or_model
    )
    shapes = param_shapes(config)
    comps: dict[str, dict[str, Tensor]] = {}
    for layer in range(config.n_layers):
        for head in range(config.n_heads):
            masks = {}
            for w in HEAD_WEIGHTS:
                name = f"blocks.{layer}.attn.{w}"
                mask = torch.zeros(shapes[name], dtype=torch.bool)
                mask[head] = True
                masks[name] = mask
            comps[head_name(layer, head)] = masks
    comps["embed"] = {
        n: torch.ones(shapes[n], dtype=torch.bool) for n in ("embed.W_E", "pos.W_pos")
    }
    comps["unembed"] = {
        n: torch.ones(shapes[n], dtype=torch.bool) for n in ("unembed.W_U", "unembed.b_U")
    }
    return comps


# ----------------------------------------------------------------------------- nn.Module


class _Holder(nn.Module):
    """A plain container so that parameter names come out as ``prefix.leaf``."""


class AttnOnlyTransformer(nn.Module):
    """``nn.Module`` wrapper whose ``named_parameters()`` are exactly :func:`param_shapes`.

    ``forward(tokens) -> logits [B, T, V]``; ``loss(tokens) -> [B, T - 1]``. Both call the
    functional forward with ``dict(self.named_parameters())``.
    """

    def __init__(self, config: TransformerConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.load_params(init_params(config, seed), _create=True)

    def load_params(self, params: Mapping[str, Tensor], _create: bool = False) -> None:
        """Copy ``params`` (a full, correctly shaped dict) into the module."""
        check_params(params, self.config)
        for name, value in params.items():
            *path, leaf = name.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, _Holder())
                owner = getattr(owner, part)
            if _create:
                owner.register_parameter(leaf, nn.Parameter(value.detach().clone().float()))
            else:
                with torch.no_grad():
                    getattr(owner, leaf).copy_(value)

    def params(self) -> Params:
        """``dict(self.named_parameters())``."""
        return dict(self.named_parameters())

    def forward(self, tokens: Tensor) -> Tensor:
        return forward(self.params(), tokens, self.config)

    def loss(self, tokens: Tensor) -> Tensor:
        return loss_per_token(self.params(), tokens, self.config)
