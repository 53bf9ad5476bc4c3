"""The project's attention-only transformer (``transformer.py``) as a model adapter.

``BuiltinTransformer(config, params)`` is the adapter of a checkpoint; ``TransformerLoss``
(``BuiltinTransformer`` without w*) is the ``loss_fn`` the project has always passed to the
sampler: ``loss_fn(params, (tokens,)) -> [B, T - 1]`` with the fast path attached.

Sites (``adapters.base``): ``embed.W_E, pos.W_pos`` → -1; block ``l``'s LayerNorm and
attention → ``2l``; ``ln_final, unembed`` → ``2 * n_layers``. The fast path's pieces call
the same functions, in the same order, as the restricted-head forward always did, so χ is
bit for bit what it was before the adapter interface existed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from patterning_core.model.adapters.base import BlockModel, ReadoutNames
from patterning_core.model.transformer import (
    TransformerConfig,
    attention_layer,
    check_params,
    components,
    embed,
    layer_norm,
    loss_per_token,
    next_token_loss,
    residual_before,
)

__all__ = ["BuiltinTransformer", "TransformerLoss"]


class BuiltinTransformer(BlockModel):
    """Adapter of the built-in attention-only transformer.

    Args:
        config: the transformer's shape.
        params: the checkpoint w* (names and shapes of ``transformer.param_shapes``);
            None for a loss function only (``params()`` then raises).
    """

    kind = "builtin"

    def __init__(self, config: TransformerConfig, params: Mapping[str, Tensor] | None = None):
        self.config = config
        self.n_blocks, self.n_heads = config.n_layers, config.n_heads
        self._params = None
        if params is not None:
            check_params(params, config)
            self._params = {k: v.detach() for k, v in params.items()}

    def params(self) -> dict[str, Tensor]:
        if self._params is None:
            raise ValueError(
                "this adapter was built without parameters: give them, "
                "BuiltinTransformer(config, params)."
            )
        return dict(self._params)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> BuiltinTransformer:
        """w* (if held) on ``device`` and in ``dtype``; the model holds no other tensor.
        In place, returns ``self``."""
        if self._params is not None:
            self._params = {k: v.to(device=device, dtype=dtype) for k, v in self._params.items()}
        return self

    def loss(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        """``transformer.loss_per_token``: ``[B, T - 1]`` (vmap-safe)."""
        (tokens,) = batch
        return loss_per_token(params, tokens, self.config)

    def components(self) -> dict[str, dict[str, Tensor]]:
        """``transformer.components``: every head ``L{l}H{h}``, ``embed``, ``unembed``."""
        return components(self.config)

    def site_of(self, name: str) -> int:
        if name.startswith("blocks."):
            return 2 * int(name.split(".")[1])
        if name.startswith(("ln_final.", "unembed.")):
            return 2 * self.n_blocks
        return -1

    def activation_at(self, params: Mapping[str, Tensor], tokens: Tensor, site: int) -> Tensor:
        resid = embed(params, tokens)
        for layer in range(min(site // 2, self.n_blocks)):
            resid = attention_layer(params, layer, resid, self.config, fused=True)
        return resid

    def loss_from(
        self, params: Mapping[str, Tensor], resid: Tensor | None, site: int, tokens: Tensor
    ) -> Tensor:
        if resid is None:
            resid = residual_before(params, tokens, 0, self.config)
        # Attention-only: after block l's attention (2l + 1) is before block l + 1 (2l + 2).
        for layer in range(max(site + 1, 0) // 2, self.n_blocks):
            resid = attention_layer(params, layer, resid, self.config, fused=True)
        return next_token_loss(params, resid, tokens, self.config)

    def residual_before(self, params: Mapping[str, Tensor], tokens: Tensor, layer: int) -> Tensor:
        # The head path's cache has always used the unfused attention below the head.
        return residual_before(params, tokens, layer, self.config)

    def attention_input(self, params: Mapping[str, Tensor], layer: int, resid: Tensor) -> Tensor:
        p = f"blocks.{layer}."
        return layer_norm(resid, params[p + "ln.w"], params[p + "ln.b"], self.config.ln_eps)

    def lowrank_readout(self, layer: int) -> ReadoutNames | None:
        if layer != self.n_blocks - 1:
            return None
        names = ("ln_final.w", "ln_final.b", "unembed.W_U", "unembed.b_U")
        return ReadoutNames(*names, eps=self.config.ln_eps)


class TransformerLoss(BuiltinTransformer):
    """``loss_fn(params, (tokens,)) -> [B, T - 1]`` with the restricted-head fast path.

    Calling it is ``transformer.loss_per_token``; ``lane_forward`` is the sampler hook.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
