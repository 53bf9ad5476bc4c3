"""Restricted SGLD runs of single attention heads, without recomputing what they cannot change.

In the restricted run of head h of layer l only that head's weights move (method.md §2);
every other weight stays at the checkpoint w*. So, for a given batch,

- the residual stream entering layer l is fixed, and so is LN_l of it;
- the outputs of the other heads of layer l are fixed; the residual leaving layer l is
  ``R*_l + out_h(θ) − out_h(θ*)`` with ``R*_l`` the residual leaving layer l at w*;
- the layers above l and the unembedding keep their weights (their inputs still change).

``HeadLaneForward`` computes the fixed parts once per distinct batch (once per chain for
SGLD minibatches, since chain c of every run sees the same batches; once per run for the
fixed evaluation batch, which never changes) and, per lane, only its own head (1/H of the
layer, in one batched matmul over lanes with the lane's head weights gathered from the
flat buffer) and the layers above. Gradients reach only the lane's head. The arithmetic is
that of ``transformer.loss_per_token`` regrouped, equal up to float rounding (tested).

For heads of the last layer the readout itself is regrouped: the residual entering the final
LayerNorm is the batch's fixed part plus the head's rank-d_head write, so the logits are a
cached ``[tokens × V]`` matrix plus a low-rank update and a per-token scale
(``lowrank_readout``), formed without the ``d_model × V`` matmul per lane.

``TransformerLoss`` is the transformer's ``loss_fn`` with this forward attached as
``lane_forward``, the hook the sampler looks for (``sampling.make_lane_forward``). Any
other set of runs (the full run, the embedding, heads of different layers stepped
together) gets ``LoopLaneForward``: the whole model lane by lane with the same fused
kernels, faster than the generic vmapped path for the few lanes these runs have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from patterning_core.model import cpu_kernels
from patterning_core.model.lowrank_readout import lowrank_cross_entropy
from patterning_core.model.transformer import (
    HEAD_WEIGHTS,
    TransformerConfig,
    attention_layer,
    causal_attention,
    layer_norm,
    loss_per_token,
    next_token_loss,
    residual_before,
)
from patterning_core.sampling.sgld import Run

__all__ = ["HeadLaneForward", "LoopLaneForward", "TransformerLoss", "head_of_run"]


def head_of_run(run: Run, config: TransformerConfig) -> tuple[int, int] | None:
    """``(layer, head)`` if ``run`` moves exactly one head's weights, else None."""
    moving = {name for name, mask in run.masks.items() if bool(mask.any())}
    for layer in range(config.n_layers):
        names = {f"blocks.{layer}.attn.{w}" for w in HEAD_WEIGHTS}
        if moving != names:
            continue
        first = run.masks[f"blocks.{layer}.attn.W_Q"]
        heads = first.reshape(config.n_heads, -1).any(dim=1).nonzero().flatten().tolist()
        if len(heads) != 1:
            return None
        head = heads[0]
        for name in names:
            mask = run.masks[name]
            if not (bool(mask[head].all()) and int(mask.sum()) == mask[head].numel()):
                return None
        return layer, head
    return None


class TransformerLoss:
    """``loss_fn(params, (tokens,)) -> [B, T - 1]`` with the restricted-head fast path.

    Calling it is ``transformer.loss_per_token``; ``lane_forward`` is the sampler hook.
    """

    def __init__(self, config: TransformerConfig):
        self.config = config

    def __call__(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        (tokens,) = batch
        return loss_per_token(params, tokens, self.config)

    def lane_forward(
        self, params: Mapping[str, Tensor], runs: Sequence[Run], num_chains: int
    ) -> HeadLaneForward | LoopLaneForward:
        """``HeadLaneForward`` if every run is one head of the same layer, else a loop over
        lanes of the fused forward (the full run, the embedding, the unembedding)."""
        heads = [head_of_run(run, self.config) for run in runs]
        if not heads or any(h is None for h in heads) or len({h[0] for h in heads}) != 1:
            return LoopLaneForward(params, self.config)
        layer = heads[0][0]
        lane_heads = torch.tensor([h[1] for h in heads]).repeat_interleave(num_chains)
        return HeadLaneForward(params, self.config, layer, lane_heads)


class LoopLaneForward:
    """``LaneForward`` for any runs: lane by lane, the whole model with fused kernels.

    Worth it over ``vmap`` for a few lanes (the full run: one lane per chain), where the
    fused attention and readout loss (about 3× and 2.6× faster) outweigh the loop.
    """

    def __init__(self, params: Mapping[str, Tensor], config: TransformerConfig):
        self.params = {k: v.detach() for k, v in params.items()}
        self.config = config

    def __call__(
        self, views: dict[str, Tensor], batch: tuple[Tensor, ...], chain_of_lane: Tensor | None
    ) -> Tensor:
        (tokens,) = batch
        lanes = next(iter(views.values())).shape[0]
        out = []
        for lane in range(lanes):
            params = {**self.params, **{k: v[lane] for k, v in views.items()}}
            lane_tokens = tokens if chain_of_lane is None else tokens[chain_of_lane[lane]]
            resid = residual_before(params, lane_tokens, 0, self.config)
            for layer in range(self.config.n_layers):
                resid = attention_layer(params, layer, resid, self.config, fused=True)
            out.append(next_token_loss(params, resid, lane_tokens, self.config))
        return torch.stack(out)


class _BatchCache:
    """What a batch fixes for the lanes' heads of one layer, gathered per lane once.

    Built from ``N`` batches ``tokens [N, B, T]``; lane i uses batch ``which[i]`` and moves
    head ``heads[i]``.

    Attributes:
        tokens: ``[lanes, B, T]`` each lane's tokens.
        x: ``[lanes, B, T, D]`` LN_l of the residual entering layer l.
        base: ``[lanes, B, T, D]`` residual leaving layer l at w* minus the lane's head's
            write to it: the lane's residual is ``base + out_h(θ)``.

    With ``readout`` (the ``[heads, d, V]`` readout of each head's write at w*, given for
    the last layer), also the terms of ``lowrank_readout`` for rows ``t < T - 1``, with
    ``N = B·(T − 1)``: ``targets [lanes, N]``; ``A`` and ``a_index`` (the centred, gained
    residual leaving the layer at w* times W_U, per batch: ``[n, N, V]``); ``Z2 [lanes, N, d]``
    and ``C2 [lanes, d, V]``, minus the lane's head's write at w* in those terms; with
    ``per_lane_A`` that write is subtracted from ``A`` once, giving one ``A`` per lane and no
    ``Z2, C2`` (for the fixed evaluation batch, reused at every draw).
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        tokens: Tensor,
        layer: int,
        config: TransformerConfig,
        which: Tensor,
        heads: Tensor,
        readout: Tensor | None = None,
        per_lane_A: bool = False,
    ):
        p = f"blocks.{layer}."
        with torch.no_grad():
            resid = residual_before(params, tokens, layer, config)
            x = layer_norm(resid, params[p + "ln.w"], params[p + "ln.b"], config.ln_eps)
            z = _head_values(
                x.unsqueeze(1),
                params[p + "attn.W_Q"][:, None],
                params[p + "attn.W_K"][:, None],
                params[p + "attn.W_V"][:, None],
                params[p + "attn.b_Q"][:, None, None],
                params[p + "attn.b_K"][:, None, None],
                params[p + "attn.b_V"][:, None, None],
            )  # [N, H, B, T, d]
            head_out = z @ params[p + "attn.W_O"][:, None]  # [N, H, B, T, D]
            resid_out = resid + head_out.sum(dim=1) + params[p + "attn.b_O"]
            self.tokens = tokens[which]
            self.x = x[which]
            self.base = resid_out[which] - head_out[which, heads]
            if readout is not None:
                lanes = len(which)
                self.targets = self.tokens[..., 1:].reshape(lanes, -1)
                A = _centred(resid_out[..., :-1, :]) * params["ln_final.w"] @ params["unembed.W_U"]
                A = A.reshape(A.shape[0], -1, A.shape[-1])  # [n, N, V]
                z_star = z[which, heads][..., :-1, :].reshape(lanes, -1, z.shape[-1])
                C_star = -readout[heads]  # [lanes, d, V]
                if per_lane_A:
                    self.A = torch.baddbmm(A[which], z_star, C_star)
                    self.a_index = torch.arange(lanes, device=which.device)
                    self.Z2 = self.C2 = None
                else:
                    self.A, self.a_index, self.Z2, self.C2 = A, which, z_star, C_star


def _centred(x: Tensor) -> Tensor:
    """``x`` minus its mean over the last dim (LayerNorm's centring)."""
    return x - x.mean(dim=-1, keepdim=True)


def head_write_readout(W_O: Tensor, ln_w: Tensor, W_U: Tensor) -> Tensor:
    """What a head's write reaches in the logits, before the final LayerNorm's scale:
    ``centred(W_O) ⊙ ln_w @ W_U``, ``[..., d, V]`` from ``W_O [..., d, D]``."""
    return _centred(W_O) * ln_w @ W_U


def _head_values(
    x: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, b_Q: Tensor, b_K: Tensor, b_V: Tensor
) -> Tensor:
    """One head's attention-weighted values ``[..., B, T, d]`` from ``x [..., B, T, D]``.

    Weights broadcast against ``x``'s leading dims: ``W_*: [..., 1, D, d]``,
    ``b_*: [..., 1, 1, d]``. Causal softmax attention scaled by 1/√d, as in
    ``transformer.attention_layer``, through the fused kernel.
    """
    q = x @ W_Q + b_Q
    k = x @ W_K + b_K
    v = x @ W_V + b_V
    return causal_attention(q, k, v)


class HeadLaneForward:
    """``LaneForward`` for lanes that each move one head of the same layer ``layer``.

    Args:
        params: the checkpoint w*.
        config: the transformer's shape.
        layer: the layer of every lane's head.
        lane_heads: ``[lanes]`` the head each lane moves.
        lowrank: for last-layer heads, whether to take the low-rank readout
            (``_last_layer_loss``). Default: where its compiled kernel runs (float32 on the
            CPU, ``cpu_kernels``); in plain torch the dense readout is faster.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        config: TransformerConfig,
        layer: int,
        lane_heads: Tensor,
        lowrank: bool | None = None,
    ):
        self.params = {k: v.detach() for k, v in params.items()}
        self.config, self.layer = config, layer
        device = next(iter(self.params.values())).device
        self.lane_heads = lane_heads.to(device)
        self.lanes = torch.arange(len(lane_heads), device=device)
        self._shared: tuple[Tensor, _BatchCache] | None = None
        self.readout: Tensor | None = None  # [H, d, V] for _last_layer_loss
        W_U = self.params["unembed.W_U"]
        if lowrank is None:
            lowrank = cpu_kernels.for_tensors(W_U) is not None
        if layer == config.n_layers - 1 and lowrank:
            p = f"blocks.{layer}.attn."
            self.readout = head_write_readout(
                self.params[p + "W_O"], self.params["ln_final.w"], W_U
            )
            self.readout_bias = self.params["ln_final.b"] @ W_U + self.params["unembed.b_U"]

    def _cache(self, tokens: Tensor, chain_of_lane: Tensor | None) -> _BatchCache:
        """Fixed activations of a batch; a shared batch (``chain_of_lane`` None, the fixed
        evaluation batch at every draw) is kept across calls."""
        if chain_of_lane is not None:
            return _BatchCache(
                self.params,
                tokens,
                self.layer,
                self.config,
                chain_of_lane,
                self.lane_heads,
                self.readout,
            )
        if self._shared is not None:
            held, cache = self._shared
            if held is tokens or (held.shape == tokens.shape and bool((held == tokens).all())):
                return cache
        cache = _BatchCache(
            self.params,
            tokens.unsqueeze(0),
            self.layer,
            self.config,
            torch.zeros_like(self.lanes),
            self.lane_heads,
            self.readout,
            per_lane_A=True,
        )
        self._shared = (tokens, cache)
        return cache

    def __call__(
        self, views: dict[str, Tensor], batch: tuple[Tensor, ...], chain_of_lane: Tensor | None
    ) -> Tensor:
        (tokens,) = batch
        cache = self._cache(tokens, chain_of_lane)
        p = f"blocks.{self.layer}.attn."

        def lane_slice(name: str) -> Tensor:  # [lanes, ...] this lane's head of the parameter
            return views[p + name][self.lanes, self.lane_heads]

        z = _head_values(
            cache.x,  # [lanes, B, T, D]
            lane_slice("W_Q")[:, None],
            lane_slice("W_K")[:, None],
            lane_slice("W_V")[:, None],
            lane_slice("b_Q")[:, None, None],
            lane_slice("b_K")[:, None, None],
            lane_slice("b_V")[:, None, None],
        )  # [lanes, B, T, d]
        W_O = lane_slice("W_O")  # [lanes, d, D]
        resid = cache.base + z @ W_O[:, None]  # [lanes, B, T, D]
        if self.readout is not None:
            return self._last_layer_loss(cache, z, W_O, resid)
        for later in range(self.layer + 1, self.config.n_layers):
            resid = attention_layer(self.params, later, resid, self.config, fused=True)
        return next_token_loss(self.params, resid, cache.tokens, self.config)

    def _last_layer_loss(self, cache: _BatchCache, z: Tensor, W_O: Tensor, resid: Tensor):
        """``next_token_loss`` of the residual ``resid = base + z·W_O``, regrouped: the final
        LayerNorm's scale per token from ``resid``, the logits as ``cache.A`` plus the head's
        rank-d update (``lowrank_readout``). ``z [lanes, B, T, d]`` → ``[lanes, B, T − 1]``."""
        lanes, batch, length, d = z.shape
        resid = resid[..., :-1, :]
        centred = _centred(resid)
        scale = torch.rsqrt((centred * centred).mean(dim=-1) + self.config.ln_eps)
        W_U = self.params["unembed.W_U"]
        loss = lowrank_cross_entropy(
            cache.A,
            cache.a_index,
            z[..., :-1, :].reshape(lanes, -1, d),
            head_write_readout(W_O, self.params["ln_final.w"], W_U),
            cache.Z2,
            cache.C2,
            scale.reshape(lanes, -1),
            self.readout_bias,
            cache.targets,
        )
        return loss.reshape(lanes, batch, length - 1)
