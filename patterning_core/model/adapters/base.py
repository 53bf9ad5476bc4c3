"""What the sampler needs from a model, and the restricted-component fast path, stated once.

A :class:`ModelAdapter` is a model as the sampling API sees it (ARCHITECTURE.md):

- ``params()``: the checkpoint w*, ``{name: Tensor}`` in a fixed order (the order fixes the
  layout of the sampler's flat buffer, hence which noise draw lands on which coordinate);
- ``loss(params, batch)``: **per-unit** losses ``[B]`` or ``[B, T]`` of a batch (a tuple of
  tensors sharing dim 0) at any ``params`` with w*'s names and shapes;
- ``components()``: ``{component: {param_name: bool mask of the parameter's shape}}``.

An adapter is itself a ``loss_fn``: calling it is ``loss``, and its ``lane_forward`` is the
hook ``sampling.make_lane_forward`` looks for. So every sampling entry point takes it as is::

    chi = estimate_susceptibilities(adapter, adapter.params(), data, probes,
                                    adapter.components(), config)

A plain adapter's ``lane_forward`` returns None: the sampler vmaps ``loss`` over lanes (the
generic path). A :class:`BlockModel` is a residual network of ``n_blocks`` blocks between an
embedding and a readout, which tells where in the forward each parameter first acts (its
*site*) and how to continue the forward from a cached activation. That is all the fast
path needs (``restricted_heads.py``):

- a run that moves only parameters at or after site ``s`` (an MLP of block l, the
  unembedding, heads of different layers) computes the activation at ``s`` once per
  batch at w*, and per lane only the forward from ``s`` (``CachedLaneForward``);
- a run that moves one attention head of block l also keeps the other heads' writes
  fixed: per lane it computes one head (batched over lanes) and the forward after the
  attention (``HeadLaneForward``), with the low-rank readout when nothing but the final
  LayerNorm and unembedding follows the head.

Sites: ``-1`` the embedding (nothing before it to cache), ``2l`` the residual entering
block ``l``, ``2l + 1`` the residual after block ``l``'s attention (before its MLP, if any),
``2 * n_blocks`` the residual entering the readout (final LayerNorm and unembedding).
Token models only: a batch is ``(tokens,)`` with ``tokens int64 [..., B, T]`` and the
per-unit loss is next-token cross-entropy ``[..., B, T - 1]``.
"""

from __future__ import annotations

import fnmatch
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from patterning_core.sampling.sgld import (
    ConfigError,
    LaneForward,
    Run,
    check_loss_output,
    validate_masks,
)

__all__ = [
    "HEAD_WEIGHTS",
    "BlockModel",
    "ModelAdapter",
    "ReadoutNames",
    "load_state_file",
    "masks_from_patterns",
    "move_module",
]

# The parameters of an attention head: slice [h] along dim 0 of each (not b_O, shared).
HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


class ModelAdapter(ABC):
    """A model as the sampler sees it; see the module docstring for the three members."""

    #: The ``kind`` of a model spec (``adapters.spec.load_adapter``).
    kind: str = "model"

    @abstractmethod
    def params(self) -> dict[str, Tensor]:
        """The checkpoint w*: detached tensors, in the order of the sampler's flat buffer."""

    @abstractmethod
    def loss(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        """Per-unit losses ``[B]`` or ``[B, T]`` of ``batch`` at ``params``."""

    @abstractmethod
    def components(self) -> dict[str, dict[str, Tensor]]:
        """``{name: {param_name: bool mask}}``: one χ row per component, in this order."""

    def __call__(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        return self.loss(params, batch)

    def lane_forward(
        self, params: Mapping[str, Tensor], runs: Sequence[Run], num_chains: int
    ) -> LaneForward | None:
        """The sampler hook: a specialized forward over lanes, or None (vmap of ``loss``)."""
        return None

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ModelAdapter:
        """This adapter with everything it holds on ``device`` and its floating-point
        tensors in ``dtype`` (None: unchanged); returns ``self`` (moved in place).

        What the loss reads besides ``params`` must move with it (a module's buffers, such
        as a ``HookedTransformer``'s attention masks): the sampler passes ``params`` on the
        device, the loss supplies the rest. The base adapter holds nothing else: subclasses
        that hold tensors or modules override this.
        """
        return self

    def check(self, batch: tuple[Tensor, ...] | Tensor) -> None:
        """Raise ``ConfigError`` naming the fix unless the loss of a two-unit slice of
        ``batch`` has the per-unit shape and every component selects a parameter of w*.

        Cheap (one small forward): call it before any sampling starts.
        """
        batch = (batch,) if isinstance(batch, Tensor) else tuple(batch)
        params = self.params()
        small = tuple(t[: min(2, t.shape[0])] for t in batch)
        try:
            with torch.no_grad():
                out = self.loss(params, small)
        except ConfigError:
            raise
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            raise ConfigError(
                f"{type(self).__name__}: the loss fails on two rows of the batch "
                f"({type(err).__name__}: {err}); check the data's dtypes and shapes against "
                "the model's."
            ) from None
        try:
            check_loss_output(out, small[0].shape[0])
        except ConfigError as err:
            raise ConfigError(f"{type(self).__name__}: {err}") from None
        comps = self.components()
        if not comps:
            raise ConfigError(f"{type(self).__name__}: the model has no components.")
        for name, masks in comps.items():
            validate_masks(params, masks, where=f"component '{name}'")


@dataclass(frozen=True)
class ReadoutNames:
    """Parameter names of a LayerNorm-then-linear readout, and its LayerNorm epsilon:
    ``logits = LN(resid; ln_w, ln_b, eps) @ weight + bias`` (``weight [D, V]``)."""

    ln_w: str
    ln_b: str
    weight: str
    bias: str
    eps: float


class BlockModel(ModelAdapter):
    """A transformer-like adapter with the restricted-component fast path.

    Subclasses give the sites of the parameters and the forward in pieces; the dispatch
    (:meth:`lane_forward`) and the fast forwards themselves (``restricted_heads.py``) are
    written once, against these methods. Shapes: ``tokens [..., B, T]`` (any leading
    dims), residuals ``[..., B, T, D]``, losses ``[..., B, T - 1]``.
    """

    n_blocks: int
    n_heads: int

    @abstractmethod
    def site_of(self, name: str) -> int:
        """The first site (module docstring) at which parameter ``name`` acts."""

    @abstractmethod
    def activation_at(self, params: Mapping[str, Tensor], tokens: Tensor, site: int) -> Tensor:
        """Residual at ``site >= 0`` for ``tokens``, as :meth:`loss_from` from an earlier
        site computes it (the built-in model: bit for bit; others: up to float rounding)."""

    @abstractmethod
    def loss_from(
        self, params: Mapping[str, Tensor], resid: Tensor | None, site: int, tokens: Tensor
    ) -> Tensor:
        """Per-token losses from the residual ``resid`` at ``site`` (``site == -1``: from
        ``tokens``, ``resid`` None), with the model's fastest kernels (no ``vmap``)."""

    # --------------------------------------------------------------- attention heads

    def supports_head_path(self) -> bool:
        """Whether the heads compute what :func:`restricted_heads._head_values` computes
        (causal softmax attention scaled by 1/√d_head, heads summed through ``W_O`` plus a
        shared ``b_O``): only then do single-head runs take ``HeadLaneForward``."""
        return True

    def head_param_names(self, layer: int) -> dict[str, str]:
        """``{"W_Q": name, ...}`` for :data:`HEAD_WEIGHTS` of block ``layer``; shapes
        ``W_Q, W_K, W_V [H, D, d]``, ``W_O [H, d, D]``, ``b_Q, b_K, b_V [H, d]``."""
        return {w: f"blocks.{layer}.attn.{w}" for w in HEAD_WEIGHTS}

    def out_bias_name(self, layer: int) -> str:
        """Name of block ``layer``'s attention output bias ``b_O [D]``."""
        return f"blocks.{layer}.attn.b_O"

    def residual_before(self, params: Mapping[str, Tensor], tokens: Tensor, layer: int) -> Tensor:
        """Residual entering block ``layer`` (the head path's cached activation)."""
        return self.activation_at(params, tokens, 2 * layer)

    @abstractmethod
    def attention_input(self, params: Mapping[str, Tensor], layer: int, resid: Tensor) -> Tensor:
        """What block ``layer``'s heads read from ``resid``: its LayerNorm, ``[..., T, D]``."""

    def lowrank_readout(self, layer: int) -> ReadoutNames | None:
        """The readout, if only it follows block ``layer``'s attention (the low-rank readout
        of its heads' runs applies); else None."""
        return None

    # --------------------------------------------------------------- dispatch

    def head_of_run(self, run: Run) -> tuple[int, int] | None:
        """``(layer, head)`` if ``run`` moves exactly one head's weights, else None."""
        moving = {name for name, mask in run.masks.items() if bool(mask.any())}
        for layer in range(self.n_blocks):
            names = self.head_param_names(layer)
            if moving != set(names.values()):
                continue
            first = run.masks[names["W_Q"]]
            heads = first.reshape(self.n_heads, -1).any(dim=1).nonzero().flatten().tolist()
            if len(heads) != 1:
                return None
            head = heads[0]
            for name in names.values():
                mask = run.masks[name]
                if not (bool(mask[head].all()) and int(mask.sum()) == mask[head].numel()):
                    return None
            return layer, head
        return None

    def start_site(self, runs: Sequence[Run]) -> int:
        """The earliest site any of ``runs`` moves a parameter at."""
        return min(
            self.site_of(name)
            for run in runs
            for name, mask in run.masks.items()
            if bool(mask.any())
        )

    def lane_forward(
        self, params: Mapping[str, Tensor], runs: Sequence[Run], num_chains: int
    ) -> LaneForward:
        """``HeadLaneForward`` if every run is one head of the same block, else the forward
        from the earliest site the runs move (``CachedLaneForward``: nothing cached when
        that is the embedding or block 0's input)."""
        from patterning_core.model.restricted_heads import CachedLaneForward, HeadLaneForward

        heads = [self.head_of_run(run) for run in runs] if self.supports_head_path() else []
        if heads and all(h is not None for h in heads) and len({h[0] for h in heads}) == 1:
            layer = heads[0][0]
            lane_heads = torch.tensor([h[1] for h in heads]).repeat_interleave(num_chains)
            return HeadLaneForward(params, self, layer, lane_heads)
        site = self.start_site(runs)
        return CachedLaneForward(params, self, site if site > 0 else -1)


def masks_from_patterns(
    params: Mapping[str, Tensor], components: Mapping[str, str | Sequence[str]]
) -> dict[str, dict[str, Tensor]]:
    """Components as whole-parameter masks from glob patterns on parameter names.

    ``components``: ``{name: pattern or [patterns]}``, patterns in ``fnmatch`` syntax
    (``"layers.0.*"``, ``"head.weight"``). Every pattern must match at least one parameter
    of ``params`` (``ConfigError`` naming the pattern and the parameters otherwise).
    """
    if not components:
        raise ConfigError("components is empty: give {name: [parameter-name patterns]}.")
    out: dict[str, dict[str, Tensor]] = {}
    for comp, patterns in components.items():
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not patterns:
            raise ConfigError(f"component {comp!r} has no parameter-name pattern.")
        masks: dict[str, Tensor] = {}
        for pattern in patterns:
            hits = [n for n in params if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise ConfigError(
                    f"component {comp!r}: pattern {pattern!r} matches no parameter; the "
                    f"parameters are {list(params)} (patterns use fnmatch syntax, e.g. "
                    "'layers.0.*')."
                )
            for n in hits:
                masks[n] = torch.ones_like(params[n], dtype=torch.bool)
        out[comp] = masks
    return out


def move_module(
    module: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None
) -> dict[str, Tensor]:
    """Move ``module``'s parameters and buffers to ``device`` (None: where they are) and its
    floating-point ones to ``dtype`` (None: unchanged), in place; integer and bool buffers
    keep their dtype. Returns ``{name: detached parameter}`` after the move."""
    if device is not None:
        module.to(device)
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ConfigError(f"a model moves to a floating-point dtype, not {dtype}.")
        module.to(dtype)  # nn.Module.to(dtype) casts floating-point tensors only
    return {n: p.detach() for n, p in module.named_parameters()}


def load_state_file(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    what: str = "checkpoint",
    fits: str = "the model",
    fix: str = "check how the model is built",
    buffers: bool = True,
) -> None:
    """Copy a safetensors state dict at ``path`` into ``module`` in place.

    The file must hold every parameter of ``module`` with its shape; it may also hold
    the module's buffers and nothing else. Values are cast to each tensor's dtype.
    ``buffers``: copy the file's buffers too (state such as running statistics); False
    when the module derives its buffers from its config (masks, rotary tables), which a
    file saved in another dtype would only round.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: not a ``.safetensors`` file (nothing pickled is ever read), or
            parameters missing, unexpected names or other shapes (each named, with ``fix``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {path} does not exist; save one with "
            "safetensors.torch.save_file(model.state_dict(), PATH)."
        )
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"{path}: {what}s are read from safetensors files only "
            "(patterning never loads pickled files); convert with "
            "safetensors.torch.save_file(state_dict, 'model.safetensors')."
        )
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = dict(module.named_parameters())
    held = dict(module.named_buffers())
    missing = [n for n in own if n not in state]
    unexpected = [n for n in state if n not in own and n not in held]
    shapes = [
        f"{n} {tuple(state[n].shape)} (model: {tuple(t.shape)})"
        for n, t in {**own, **(held if buffers else {})}.items()
        if n in state and tuple(state[n].shape) != tuple(t.shape)
    ]
    if missing or unexpected or shapes:

        def few(names: list[str]) -> str:
            return str(names[:4])[:-1] + (f", … ({len(names)} in all)]" if len(names) > 4 else "]")

        raise ConfigError(
            f"{path} does not fit {fits}: missing {few(missing)}, unexpected "
            f"{few(unexpected)}, other shapes {few(shapes)}; {fix}."
        )
    with torch.no_grad():
        for n, t in {**own, **(held if buffers else {})}.items():
            if n in state:
                t.copy_(state[n].to(t.dtype))
