"""Restricted SGLD runs of single attention heads, without recomputing what they cannot change.

Written once against the adapter interface (``adapters.base.BlockModel``): the built-in
transformer and the TransformerLens adapter both take it.

In the restricted run of head h of block l only that head's weights move (method.md §2);
every other weight stays at the checkpoint w*. So, for a given batch,

- the residual stream entering block l is fixed, and so is its LayerNorm;
- the outputs of the other heads of block l are fixed; the residual after block l's
  attention is ``R*_l + out_h(θ) − out_h(θ*)`` with ``R*_l`` that residual at w*;
- the rest of block l (its MLP, if any), the blocks above and the unembedding keep their
  weights (their inputs still change).

``HeadLaneForward`` computes the fixed parts once per distinct batch (once per chain for
SGLD minibatches, since chain c of every run sees the same batches; once per run for the
fixed evaluation batch, which never changes) and, per lane, only its own head (1/H of the
layer, in one batched matmul over lanes with the lane's head weights gathered from the
flat buffer) and the forward after the attention (``BlockModel.loss_from``). Gradients
reach only the lane's head. The arithmetic is the model's own regrouped, equal up to float
rounding (tested).

When only the readout follows the heads (the last block of an attention-only model,
``BlockModel.lowrank_readout``) the readout itself is regrouped: the residual entering the
final LayerNorm is the batch's fixed part plus the head's rank-d_head write, so the logits
are a cached ``[tokens × V]`` matrix plus a low-rank update and a per-token scale
(``lowrank_readout``), formed without the ``d_model × V`` matmul per lane.

Any other set of runs (the full run, the embedding, the unembedding, an MLP, heads of
different blocks stepped together) gets ``CachedLaneForward``: the activation at the
earliest site the runs move, computed once per batch at w*, and per lane the forward from
there with the model's fused kernels (the whole model lane by lane when that site is the
embedding: ``LoopLaneForward``).

``TransformerLoss`` is the built-in transformer's ``loss_fn``, its adapter
(``adapters.builtin.BuiltinTransformer``) with the config as the only argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from patterning_core.model import cpu_kernels
from patterning_core.model.adapters.base import BlockModel
from patterning_core.model.adapters.builtin import TransformerLoss
from patterning_core.model.lowrank_readout import lowrank_cross_entropy
from patterning_core.model.transformer import TransformerConfig, causal_attention
from patterning_core.sampling.sgld import Run

__all__ = [
    "CachedLaneForward",
    "HeadLaneForward",
    "LoopLaneForward",
    "TransformerLoss",
    "head_of_run",
]


def _model(model: BlockModel | TransformerConfig) -> BlockModel:
    """The adapter of ``model`` (a built-in config stands for the built-in adapter)."""
    return TransformerLoss(model) if isinstance(model, TransformerConfig) else model


def head_of_run(run: Run, model: BlockModel | TransformerConfig) -> tuple[int, int] | None:
    """``(layer, head)`` if ``run`` moves exactly one head's weights, else None."""
    return _model(model).head_of_run(run)


class CachedLaneForward:
    """``LaneForward`` for any runs: lane by lane, the forward from ``site`` on.

    The activation at ``site`` (``BlockModel`` sites; ``-1``: none, the whole model) is
    computed once per batch at w*, chain by chain on the same ``[B, T]`` shapes the
    uncached forward uses (so for the built-in model a lane's losses equal the whole
    model's bit for bit; ``BlockModel.activation_at``). Worth
    it over ``vmap`` for a few lanes (the full run: one lane per chain), where the fused
    attention and readout loss (about 3× and 2.6× faster) outweigh the loop.
    """

    def __init__(
        self, params: Mapping[str, Tensor], model: BlockModel | TransformerConfig, site: int = -1
    ):
        self.params = {k: v.detach() for k, v in params.items()}
        self.model, self.site = _model(model), site
        self._shared: tuple[Tensor, Tensor] | None = None

    def _activations(self, tokens: Tensor, chains: Sequence[int] | None) -> dict[int, Tensor]:
        """``{chain: activation}`` of ``tokens [chains, B, T]`` (``chains`` None: one shared
        batch ``[B, T]``, key -1, kept across calls while the tokens are equal)."""
        with torch.no_grad():
            if chains is not None:
                return {
                    c: self.model.activation_at(self.params, tokens[c], self.site) for c in chains
                }
            if self._shared is not None:
                held, act = self._shared
                if held is tokens or (held.shape == tokens.shape and bool((held == tokens).all())):
                    return {-1: act}
            act = self.model.activation_at(self.params, tokens, self.site)
            self._shared = (tokens, act)
            return {-1: act}

    def __call__(
        self, views: dict[str, Tensor], batch: tuple[Tensor, ...], chain_of_lane: Tensor | None
    ) -> Tensor:
        (tokens,) = batch
        lanes = next(iter(views.values())).shape[0]
        chains = None if chain_of_lane is None else chain_of_lane.tolist()
        cached = None
        if self.site >= 0:
            cached = self._activations(tokens, None if chains is None else sorted(set(chains)))
        out = []
        for lane in range(lanes):
            params = {**self.params, **{k: v[lane] for k, v in views.items()}}
            chain = -1 if chains is None else chains[lane]
            lane_tokens = tokens if chains is None else tokens[chain]
            resid = None if cached is None else cached[chain]
            out.append(self.model.loss_from(params, resid, self.site, lane_tokens))
        return torch.stack(out)


# The lane loop over the whole model (site -1): the name the built-in path has always used.
LoopLaneForward = CachedLaneForward


class _BatchCache:
    """What a batch fixes for the lanes' heads of one layer, gathered per lane once.

    Built from ``N`` batches ``tokens [N, B, T]``; lane i uses batch ``which[i]`` and moves
    head ``heads[i]``.

    Attributes:
        tokens: ``[lanes, B, T]`` each lane's tokens.
        x: ``[lanes, B, T, D]`` what block l's heads read (its LayerNorm of the residual
            entering block l).
        base: ``[lanes, B, T, D]`` residual after block l's attention at w* minus the lane's
            head's write to it: the lane's residual is ``base + out_h(θ)``.

    With ``readout`` (the ``[heads, d, V]`` readout of each head's write at w*, given when
    only the readout follows the attention), also the terms of ``lowrank_readout`` for rows
    ``t < T - 1``, with
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
        model: BlockModel,
        which: Tensor,
        heads: Tensor,
        readout: Tensor | None = None,
        per_lane_A: bool = False,
    ):
        names = model.head_param_names(layer)
        with torch.no_grad():
            resid = model.residual_before(params, tokens, layer)
            x = model.attention_input(params, layer, resid)
            z = _head_values(
                x.unsqueeze(1),
                params[names["W_Q"]][:, None],
                params[names["W_K"]][:, None],
                params[names["W_V"]][:, None],
                params[names["b_Q"]][:, None, None],
                params[names["b_K"]][:, None, None],
                params[names["b_V"]][:, None, None],
            )  # [N, H, B, T, d]
            head_out = z @ params[names["W_O"]][:, None]  # [N, H, B, T, D]
            resid_out = resid + head_out.sum(dim=1) + params[model.out_bias_name(layer)]
            self.tokens = tokens[which]
            self.x = x[which]
            self.base = resid_out[which] - head_out[which, heads]
            if readout is not None:
                lanes = len(which)
                self.targets = self.tokens[..., 1:].reshape(lanes, -1)
                ro = model.lowrank_readout(layer)
                assert ro is not None
                A = _centred(resid_out[..., :-1, :]) * params[ro.ln_w] @ params[ro.weight]
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
    ``transformer.attention_layer`` (and ``BlockModel.supports_head_path``), through the
    fused kernel.
    """
    q = x @ W_Q + b_Q
    k = x @ W_K + b_K
    v = x @ W_V + b_V
    return causal_attention(q, k, v)


class HeadLaneForward:
    """``LaneForward`` for lanes that each move one head of the same block ``layer``.

    Args:
        params: the checkpoint w*.
        model: the adapter (``BlockModel``; a built-in ``TransformerConfig`` stands for the
            built-in transformer).
        layer: the block of every lane's head.
        lane_heads: ``[lanes]`` the head each lane moves.
        lowrank: where only the readout follows the heads (``model.lowrank_readout``),
            whether to take the low-rank readout (``_last_layer_loss``). Default: where its
            compiled kernel runs (float32 on the CPU, ``cpu_kernels``); in plain torch the
            dense readout is faster.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        model: BlockModel | TransformerConfig,
        layer: int,
        lane_heads: Tensor,
        lowrank: bool | None = None,
    ):
        self.params = {k: v.detach() for k, v in params.items()}
        self.model, self.layer = _model(model), layer
        self.names = self.model.head_param_names(layer)
        device = next(iter(self.params.values())).device
        self.lane_heads = lane_heads.to(device)
        self.lanes = torch.arange(len(lane_heads), device=device)
        self._shared: tuple[Tensor, _BatchCache] | None = None
        self.readout: Tensor | None = None  # [H, d, V] for _last_layer_loss
        ro = self.readout_names = self.model.lowrank_readout(layer)
        if ro is not None:
            W_U = self.params[ro.weight]
            if lowrank is None:
                lowrank = cpu_kernels.for_tensors(W_U) is not None
            if lowrank:
                self.readout = head_write_readout(
                    self.params[self.names["W_O"]], self.params[ro.ln_w], W_U
                )
                self.readout_bias = self.params[ro.ln_b] @ W_U + self.params[ro.bias]

    def _cache(self, tokens: Tensor, chain_of_lane: Tensor | None) -> _BatchCache:
        """Fixed activations of a batch; a shared batch (``chain_of_lane`` None, the fixed
        evaluation batch at every draw) is kept across calls."""
        if chain_of_lane is not None:
            return _BatchCache(
                self.params,
                tokens,
                self.layer,
                self.model,
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
            self.model,
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

        def lane_slice(name: str) -> Tensor:  # [lanes, ...] this lane's head of the parameter
            return views[self.names[name]][self.lanes, self.lane_heads]

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
        return self.model.loss_from(self.params, resid, 2 * self.layer + 1, cache.tokens)

    def _last_layer_loss(self, cache: _BatchCache, z: Tensor, W_O: Tensor, resid: Tensor):
        """``next_token_loss`` of the residual ``resid = base + z·W_O``, regrouped: the final
        LayerNorm's scale per token from ``resid``, the logits as ``cache.A`` plus the head's
        rank-d update (``lowrank_readout``). ``z [lanes, B, T, d]`` → ``[lanes, B, T − 1]``."""
        lanes, batch, length, d = z.shape
        resid = resid[..., :-1, :]
        centred = _centred(resid)
        ro = self.readout_names
        assert ro is not None
        scale = torch.rsqrt((centred * centred).mean(dim=-1) + ro.eps)
        W_U = self.params[ro.weight]
        loss = lowrank_cross_entropy(
            cache.A,
            cache.a_index,
            z[..., :-1, :].reshape(lanes, -1, d),
            head_write_readout(W_O, self.params[ro.ln_w], W_U),
            cache.Z2,
            cache.C2,
            scale.reshape(lanes, -1),
            self.readout_bias,
            cache.targets,
        )
        return loss.reshape(lanes, batch, length - 1)
