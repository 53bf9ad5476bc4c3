"""TransformerLens ``HookedTransformer`` models as model adapters (optional extra ``tl``).

``TransformerLensModel(model)`` adapts a ``HookedTransformer`` (TransformerLens 3.x: the
4.x series removed ``HookedTransformer``), attention-only or with MLPs:

- per-unit loss: TransformerLens's own per-token next-token loss, ``[B, T - 1]``, unit
  ``(b, t)`` = ``-log p(tokens[b, t + 1] | tokens[b, : t + 1])`` (the built-in convention);
- components, named like the built-in ones: ``L{l}H{h}`` (slice ``[h]`` of block l's
  ``W_Q, W_K, W_V, W_O, b_Q, b_K, b_V``; not ``b_O``, not LayerNorm), ``L{l}MLP`` (every
  parameter under ``blocks.{l}.mlp``), ``embed`` (``embed.W_E`` and ``pos_embed.W_pos``),
  ``unembed`` (``unembed.W_U``, ``unembed.b_U``);
- parameters in a canonical order (embedding; per block LayerNorm, ``W_Q, W_K, W_V, W_O,
  b_Q, b_K, b_V, b_O``, second LayerNorm, MLP; final LayerNorm; unembedding), the built-in
  transformer's order, so a converted built-in model samples along the same random streams;
- the fast path (``adapters.base.BlockModel``): the residual entering a block (or after its
  attention) is read with TransformerLens hooks (``blocks.{l}.hook_resid_pre``,
  ``hook_resid_mid``, ``hook_resid_post``) at w*, and the forward continues from it
  through the model's own LayerNorms and MLPs (``torch.func.functional_call``), its
  attention through the fused kernel of the built-in path and its readout through the
  fused loss (``fused_loss``): the model's function, equal to TransformerLens's own
  forward up to float rounding (tested: ~1e-15 in float64).

The fast path needs a GPT-2-style model ("standard": learned absolute positions, LayerNorm,
global causal attention scaled by 1/√d_head, no grouped keys/values, no soft caps, attention
then MLP); any other ``HookedTransformer`` runs lane by lane through its own ``forward``
(correct, slower). Nothing here touches the network: a model is built from a
``HookedTransformerConfig`` and, optionally, a local safetensors state dict.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from patterning_core.model.adapters.base import (
    HEAD_WEIGHTS,
    BlockModel,
    ReadoutNames,
    load_state_file,
)
from patterning_core.model.fused_loss import linear_cross_entropy
from patterning_core.model.transformer import TransformerConfig, _project, causal_attention
from patterning_core.sampling.sgld import ConfigError

__all__ = [
    "TransformerLensModel",
    "hooked_transformer_from_builtin",
    "load_hooked_transformer",
    "require_transformer_lens",
]

_ATTN_ORDER = (*HEAD_WEIGHTS[:4], *HEAD_WEIGHTS[4:], "b_O")  # W_Q W_K W_V W_O b_Q b_K b_V b_O
_BLOCK = re.compile(r"^blocks\.(\d+)\.([^.]+)\.(.+)$")


def require_transformer_lens() -> Any:
    """The ``transformer_lens`` module (3.x), or an ``ImportError`` naming the install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformer_lens
        from transformer_lens import HookedTransformer  # noqa: F401 (removed in 4.x)
    except ImportError as err:
        raise ImportError(
            "TransformerLens models need the optional extra: pip install -e '.[tl]' "
            "(transformer-lens 3.x; 4.x removed HookedTransformer). "
            f"Import failed with: {err}"
        ) from None
    return transformer_lens


def _why_not_standard(cfg: Any) -> str | None:
    """Why the fast path does not apply to a ``HookedTransformerConfig``, or None."""
    from transformer_lens.components import transformer_block

    post_norm = getattr(transformer_block, "POST_NORM_ARCHITECTURES", ())
    checks = [
        (cfg.positional_embedding_type == "standard", "positional_embedding_type != 'standard'"),
        (cfg.normalization_type == "LN", "normalization_type != 'LN'"),
        (not cfg.parallel_attn_mlp, "parallel_attn_mlp"),
        (not cfg.use_normalization_before_and_after, "use_normalization_before_and_after"),
        (cfg.original_architecture not in post_norm, "a post-norm architecture"),
        (cfg.n_key_value_heads in (None, cfg.n_heads), "grouped keys/values"),
        (all(t == "global" for t in (cfg.attn_types or [])), "local attention"),
        (cfg.attention_dir == "causal", "bidirectional attention"),
        (
            cfg.use_attn_scale and math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)),
            "an attention scale other than sqrt(d_head)",
        ),
        (not cfg.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx"),
        (getattr(cfg, "attn_scores_soft_cap", -1.0) <= 0, "attention soft cap"),
        (getattr(cfg, "output_logits_soft_cap", -1.0) <= 0, "output soft cap"),
        (not getattr(cfg, "use_qk_norm", False), "query/key norm"),
        (not getattr(cfg, "post_embedding_ln", False), "post-embedding LayerNorm"),
        (not cfg.final_rms, "final RMS norm"),
    ]
    failed = [why for ok, why in checks if not ok]
    return ", ".join(failed) if failed else None


def _order_key(name: str) -> tuple:
    """Sort key of the canonical parameter order (see the module docstring)."""
    if name.startswith("embed."):
        return (0, 0)
    if name.startswith("pos_embed."):
        return (0, 1)
    m = _BLOCK.match(name)
    if m:
        layer, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        if part == "ln1":
            return (1, layer, 0, ("w", "b").index(leaf) if leaf in ("w", "b") else 2)
        if part == "attn":
            return (1, layer, 1, _ATTN_ORDER.index(leaf) if leaf in _ATTN_ORDER else 99)
        if part == "ln2":
            return (1, layer, 2, ("w", "b").index(leaf) if leaf in ("w", "b") else 2)
        return (1, layer, 3 if part == "mlp" else 4, 0)
    if name.startswith("ln_final."):
        return (2, 0)
    if name.startswith("unembed."):
        return (2, 1, ("W_U", "b_U").index(name[8:]) if name[8:] in ("W_U", "b_U") else 2)
    return (3,)


def _whole(params: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


class TransformerLensModel(BlockModel):
    """Adapter of a TransformerLens ``HookedTransformer`` (see the module docstring).

    Args:
        model: the ``HookedTransformer`` at the checkpoint w*; its parameters must have the
            config's dtype (``HookedTransformerConfig(dtype=...)``), which TransformerLens
            casts attention patterns to.
    """

    kind = "transformer_lens"

    def __init__(self, model: Any):
        tl = require_transformer_lens()
        if not isinstance(model, tl.HookedTransformer):
            raise ConfigError(
                f"TransformerLensModel takes a transformer_lens.HookedTransformer, got "
                f"{type(model).__name__}; for another nn.Module use adapters.module.ModuleAdapter."
            )
        self.model = model
        self.cfg = cfg = model.cfg
        named = dict(model.named_parameters())
        dtypes = {p.dtype for p in named.values()}
        if dtypes != {cfg.dtype}:
            raise ConfigError(
                f"the HookedTransformer's parameters are {sorted(map(str, dtypes))} but its "
                f"config says {cfg.dtype}; build it with HookedTransformerConfig(dtype=...) of "
                "the parameters' dtype (TransformerLens casts attention patterns to cfg.dtype)."
            )
        self._params = {n: named[n].detach() for n in sorted(named, key=_order_key)}
        self.n_blocks, self.n_heads = cfg.n_layers, cfg.n_heads
        self.why_slow = _why_not_standard(cfg)
        self.standard = self.why_slow is None

    # --------------------------------------------------------------- ModelAdapter

    def params(self) -> dict[str, Tensor]:
        return dict(self._params)

    def loss(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        """TransformerLens's per-token loss at ``params``: ``tokens [B, T]`` → ``[B, T - 1]``."""
        (tokens,) = batch
        kwargs = {"return_type": "loss", "loss_per_token": True}
        return functional_call(self.model, dict(params), (tokens,), kwargs)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TransformerLensModel:
        """The model's parameters *and buffers* (attention masks, ``IGNORE``, rotary tables)
        on ``device``, its floating-point ones in ``dtype``, and its config updated
        (``cfg.device``, ``cfg.dtype``: TransformerLens casts attention patterns to
        ``cfg.dtype``) through ``HookedTransformer.to``. In place, returns ``self``."""
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(f"a model moves to a floating-point dtype, not {dtype}.")
        for target in (device, dtype):
            if target is not None:
                self.model.to(target, print_details=False)
        named = dict(self.model.named_parameters())
        self._params = {n: named[n].detach() for n in self._params}
        return self

    def components(self) -> dict[str, dict[str, Tensor]]:
        params = self._params
        comps: dict[str, dict[str, Tensor]] = {}
        for layer in range(self.n_blocks):
            for head in range(self.n_heads):
                masks = {}
                for name in self.head_param_names(layer).values():
                    if name not in params:
                        continue
                    mask = torch.zeros_like(params[name], dtype=torch.bool)
                    mask[head] = True
                    masks[name] = mask
                comps[f"L{layer}H{head}"] = masks
        for layer in range(self.n_blocks):
            mlp = [n for n in params if n.startswith(f"blocks.{layer}.mlp.")]
            if mlp:
                comps[f"L{layer}MLP"] = _whole(params, mlp)
        for comp, names in (
            ("embed", ("embed.W_E", "pos_embed.W_pos")),
            ("unembed", ("unembed.W_U", "unembed.b_U")),
        ):
            present = [n for n in names if n in params]
            if present:
                comps[comp] = _whole(params, present)
        return comps

    # --------------------------------------------------------------- BlockModel

    def supports_head_path(self) -> bool:
        return self.standard

    def site_of(self, name: str) -> int:
        if not self.standard:
            return -1  # lane by lane through the model's own forward
        m = _BLOCK.match(name)
        if m:
            layer, part = int(m.group(1)), m.group(2)
            after_attention = part in ("ln2", "mlp") and not self.cfg.attn_only
            return 2 * layer + (1 if after_attention else 0)
        if name.startswith(("ln_final.", "unembed.")):
            return 2 * self.n_blocks
        return -1

    def _hook_at(self, site: int) -> tuple[str, int]:
        """The hook holding the residual at ``site``, and the block to stop before."""
        layer = site // 2
        if site == 2 * self.n_blocks:
            return f"blocks.{self.n_blocks - 1}.hook_resid_post", self.n_blocks
        if site % 2 == 0:
            return f"blocks.{layer}.hook_resid_pre", layer + 1
        return f"blocks.{layer}.hook_resid_mid", layer + 1

    def activation_at(self, params: Mapping[str, Tensor], tokens: Tensor, site: int) -> Tensor:
        """The residual at ``site`` read by a TransformerLens hook, ``[..., B, T, D]``."""
        lead, length = tokens.shape[:-1], tokens.shape[-1]
        name, stop = self._hook_at(site)
        held: list[Tensor] = []

        def keep(act: Tensor, hook: Any) -> None:
            held.append(act)

        with self.model.hooks(fwd_hooks=[(name, keep)]):
            functional_call(
                self.model,
                dict(params),
                (tokens.reshape(-1, length),),
                {"return_type": None, "stop_at_layer": stop},
            )
        (act,) = held
        return act.reshape(*lead, length, act.shape[-1])

    def _sub(self, module: str, params: Mapping[str, Tensor]) -> Callable[..., Tensor]:
        """Submodule ``module`` of the model as a function of its inputs at ``params``."""
        prefix = module + "."
        own = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        sub = self.model.get_submodule(module)
        return lambda *args: functional_call(sub, own, args)

    def loss_from(
        self, params: Mapping[str, Tensor], resid: Tensor | None, site: int, tokens: Tensor
    ) -> Tensor:
        lead, length = tokens.shape[:-1], tokens.shape[-1]
        flat_tokens = tokens.reshape(-1, length)
        if not self.standard:
            kwargs = {"return_type": "loss", "loss_per_token": True}
            out = functional_call(self.model, dict(params), (flat_tokens,), kwargs)
            return out.reshape(*lead, length - 1)
        if resid is None:
            resid = functional_call(self.model, dict(params), (flat_tokens,), {"stop_at_layer": 0})
            start = 0
        else:
            resid = resid.reshape(-1, length, resid.shape[-1])
            start = (site + 1) // 2
            if site % 2 == 1 and not self.cfg.attn_only:  # the rest of block site // 2
                layer = site // 2
                normalized = self._sub(f"blocks.{layer}.ln2", params)(resid)
                resid = resid + self._sub(f"blocks.{layer}.mlp", params)(normalized)
        for layer in range(start, self.n_blocks):
            resid = self._block(params, layer, resid)
        x = self._sub("ln_final", params)(resid[:, :-1, :])
        loss = linear_cross_entropy(
            x.reshape(-1, x.shape[-1]),
            params["unembed.W_U"],
            params["unembed.b_U"],
            flat_tokens[:, 1:].reshape(-1),
        )
        return loss.reshape(*lead, length - 1)

    def _block(self, params: Mapping[str, Tensor], layer: int, resid: Tensor) -> Tensor:
        """Block ``layer`` of a standard model on ``resid [N, T, D]``: its own LayerNorms
        and MLP, the attention through the fused kernel (``transformer.attention_layer``'s
        arithmetic, which TransformerLens's einsums equal up to float rounding)."""
        p = f"blocks.{layer}."
        x = self._sub(p + "ln1", params)(resid)
        q = _project(x, params[p + "attn.W_Q"], params[p + "attn.b_Q"])
        k = _project(x, params[p + "attn.W_K"], params[p + "attn.b_K"])
        v = _project(x, params[p + "attn.W_V"], params[p + "attn.b_V"])
        z = causal_attention(q, k, v).transpose(-2, -3)  # [N, T, H, d]
        W_O = params[p + "attn.W_O"]
        H, d, D = W_O.shape
        resid = resid + z.reshape(*z.shape[:-2], H * d) @ W_O.reshape(H * d, D)
        resid = resid + params[p + "attn.b_O"]
        if self.cfg.attn_only:
            return resid
        normalized = self._sub(p + "ln2", params)(resid)
        return resid + self._sub(p + "mlp", params)(normalized)

    def attention_input(self, params: Mapping[str, Tensor], layer: int, resid: Tensor) -> Tensor:
        shape = resid.shape
        x = self._sub(f"blocks.{layer}.ln1", params)(resid.reshape(-1, *shape[-2:]))
        return x.reshape(shape)

    def lowrank_readout(self, layer: int) -> ReadoutNames | None:
        if not (self.standard and self.cfg.attn_only and layer == self.n_blocks - 1):
            return None
        names = ("ln_final.w", "ln_final.b", "unembed.W_U", "unembed.b_U")
        return ReadoutNames(*names, eps=self.cfg.eps)


# ----------------------------------------------------------------------------- building models


def load_hooked_transformer(
    config: Mapping[str, Any],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Any:
    """A ``HookedTransformer`` from ``HookedTransformerConfig`` fields, offline.

    Args:
        config: the config's fields (e.g. ``n_layers, d_model, d_head, n_heads, n_ctx,
            d_vocab, attn_only, act_fn, d_mlp, normalization_type``); no tokenizer and no
            pretrained name is ever fetched.
        checkpoint: a safetensors file of the model's ``state_dict()`` (or of its
            parameters alone); None: the config's fresh initialization (``seed`` field).
        dtype: the parameters' dtype (default: the config's, float32).

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        ConfigError: the config is invalid, or the state dict lacks or adds parameters or
            has other shapes (each one named).
    """
    tl = require_transformer_lens()
    from transformer_lens import HookedTransformerConfig

    fields = dict(config)
    if dtype is not None:
        fields["dtype"] = dtype
    elif isinstance(fields.get("dtype"), str):
        fields["dtype"] = getattr(torch, fields["dtype"])
    for key in ("tokenizer_name", "model_name"):
        if fields.get(key) not in (None, "custom"):
            raise ConfigError(
                f"HookedTransformerConfig.{key} = {fields[key]!r} would fetch from the network; "
                "build the model from its shape and load local weights (checkpoint=...)."
            )
    try:
        cfg = HookedTransformerConfig(**fields)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"invalid HookedTransformerConfig {fields}: {err}") from None
    model = tl.HookedTransformer(cfg)
    if checkpoint is None:
        return model
    load_state_file(
        model,
        checkpoint,
        what="TransformerLens checkpoint",
        fits="the HookedTransformer of this config",
        fix="check the config's fields",
        buffers=False,  # masks and rotary tables follow the config
    )
    return model


def hooked_transformer_from_builtin(
    params: Mapping[str, Tensor], config: TransformerConfig, *, dtype: torch.dtype | None = None
) -> Any:
    """The built-in attention-only transformer's weights in a ``HookedTransformer``.

    Same function up to float rounding: pre-LN attention-only blocks, LayerNorm with
    ``config.ln_eps``, learned positions, causal attention scaled by 1/√d_head. Names map
    ``pos.W_pos → pos_embed.W_pos`` and ``blocks.{l}.ln.* → blocks.{l}.ln1.*``; every
    other name is the same. ``dtype`` defaults to the parameters' dtype.
    """
    dtype = dtype or next(iter(params.values())).dtype
    fields = {
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "d_model": config.d_model,
        "d_head": config.d_head,
        "n_ctx": config.n_ctx,
        "d_vocab": config.d_vocab,
        "attn_only": True,
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "eps": config.ln_eps,
        "act_fn": "relu",  # unused (no MLPs); the config requires one
        "seed": 0,
    }
    model = load_hooked_transformer(fields, dtype=dtype)
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in params.items():
            target = name.replace("pos.W_pos", "pos_embed.W_pos")
            target = re.sub(r"^blocks\.(\d+)\.ln\.", r"blocks.\1.ln1.", target)
            own[target].copy_(value.to(dtype))
    return model
