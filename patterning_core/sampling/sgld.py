"""Vectorized localized SGLD: many chains, and many restricted runs, stepped together.

Conventions
-----------
- A model is ``loss_fn(params, batch) -> Tensor`` of per-unit losses, shape ``[B]`` (one
  unit per example) or ``[B, T]`` (one unit per token). ``params`` is ``dict[str, Tensor]``;
  a batch is a tuple of tensors, the same slice along dim 0 of each tensor of ``data``.
- A *run* is a named set of moving coordinates, ``{param_name: bool mask}`` (the restricted
  run of a component, or the full run where every coordinate moves). A *lane* is one chain
  of one run. Lanes are ordered run-major: lane ``r * num_chains + c``.
- The moving weights of all lanes live in one flat buffer ``[lanes, numel]``; the
  parameters handed to ``loss_fn`` are views into it. The forward is ``vmap``-ed over
  lanes, the gradient is one ``autograd.grad`` of the summed lane losses (lanes are
  independent, so each lane receives its own gradient), and the update is elementwise.
- Every lane has its own noise stream derived from ``(config.seed, run name, chain
  index)``. Minibatch order is derived from ``(config.seed, chain index)`` alone: chain c of
  every run sees the same batches (common random numbers across runs, which lets a
  specialized forward compute what the batch fixes once per chain instead of once per
  lane). A chain gives the same numbers whichever other chains or runs share its process,
  so shards computed apart combine into one estimate.
- The forward over lanes is ``vmap`` of ``loss_fn`` (``GroupedLaneForward``: runs grouped
  by the parameters they move, vmapped chain-outer and run-inner, so what a group's
  parameters cannot change is computed once per chain) unless ``loss_fn`` offers a
  specialized one: an attribute ``lane_forward(params, runs, num_chains)`` returning a
  ``LaneForward`` (or None to decline), e.g. the restricted-head forward of a transformer
  that reuses the activations a head's run cannot change (``restricted_heads.py``).
- Noise is drawn only for masked coordinates, so a run restricted to a subset of the
  weights is exactly the sampler of the lower-dimensional model.

SGLD update (method.md §3), on masked coordinates only::

    w ← w − (ε/2)·G·[nβ ∇L_batch(w) + γ (w − w*)] + √(ε·G) · N(0, I)

with G = 1 (``"sgld"``) or G = 1/(√v̂ + rmsprop_eps), v̂ the bias-corrected running mean of
(nβ ∇L_batch)² (``"rmsprop"``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from patterning_core.sampling.config import ConfigError, SamplerConfig

LossFn = Callable[[dict[str, Tensor], tuple[Tensor, ...]], Tensor]

# Run name under which the minibatch streams are keyed: one stream per chain, shared by runs.
BATCH_STREAM = "minibatches"


class SamplerDivergence(RuntimeError):  # noqa: N818 (name fixed by the public API)
    """A chain produced a non-finite loss. Never written out as NaN: change the settings."""

    def __init__(self, *, run: str, chain: int, step: int, loss: float, config: SamplerConfig):
        self.run, self.chain, self.step, self.loss = run, chain, step, loss
        super().__init__(
            f"SGLD diverged: run '{run}', chain {chain}, step {step} gave loss {loss}. "
            f"Reduce step_size (now {config.step_size:g}) or increase localization "
            f"(now {config.localization:g}); nβ is {config.n_beta:g}, and the step must stay "
            "well inside the stability limit ε·(nβ·curvature + γ) < 4."
        )


@dataclass(frozen=True)
class Run:
    """A named SGLD run: which coordinates of which parameters move.

    ``masks`` maps parameter names to bool tensors of the parameter's full shape; True
    coordinates move, everything else stays at the checkpoint w*.
    """

    name: str
    masks: Mapping[str, Tensor]


def full_run(params: Mapping[str, Tensor], name: str = "full") -> Run:
    """The run in which every coordinate of every parameter moves."""
    return Run(name, {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()})


def lane_seed(seed: int, run_name: str, chain: int, stream: str) -> int:
    """A 63-bit seed for one stream of one chain of one run, stable across processes."""
    digest = hashlib.sha256(f"{seed}/{run_name}/{chain}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def as_data_tuple(data: Tensor | Sequence[Tensor], what: str = "data") -> tuple[Tensor, ...]:
    """Normalize ``data`` to a non-empty tuple of tensors with one common length along dim 0."""
    if isinstance(data, Tensor):
        data = (data,)
    data = tuple(data)
    if not data or not all(isinstance(t, Tensor) for t in data):
        raise ConfigError(f"{what} must be a tensor or a non-empty tuple of tensors.")
    lengths = {t.shape[0] if t.dim() > 0 else None for t in data}
    if None in lengths or len(lengths) != 1:
        shapes = [tuple(t.shape) for t in data]
        raise ConfigError(
            f"{what}: every tensor must have the same length along dim 0 (one row per "
            f"example); got shapes {shapes}."
        )
    if data[0].shape[0] == 0:
        raise ConfigError(f"{what} is empty: it needs at least one example.")
    return data


def validate_masks(
    params: Mapping[str, Tensor], masks: Mapping[str, Tensor], where: str
) -> dict[str, Tensor]:
    """Check a ``{param_name: bool mask}`` against ``params``; return the masks as bool."""
    if not masks:
        raise ConfigError(f"{where}: the mask dict is empty; name at least one parameter.")
    out: dict[str, Tensor] = {}
    for name, mask in masks.items():
        if name not in params:
            raise ConfigError(
                f"{where}: mask for unknown parameter '{name}'; parameters are {sorted(params)}."
            )
        mask = torch.as_tensor(mask, device=params[name].device)
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ConfigError(
                f"{where}: mask for '{name}' has shape {tuple(mask.shape)}, but the parameter "
                f"has shape {tuple(params[name].shape)}; a mask covers the full parameter."
            )
        out[name] = mask.to(torch.bool)
    if not any(bool(m.any()) for m in out.values()):
        raise ConfigError(f"{where}: the masks select no coordinate; nothing would move.")
    return out


def evaluate_in_chunks(
    loss_fn: LossFn, params: Mapping[str, Tensor], data: tuple[Tensor, ...], chunk: int = 1024
) -> Tensor:
    """Per-unit losses of ``loss_fn`` at ``params`` over all of ``data``, without gradients."""
    n = data[0].shape[0]
    parts = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            batch = tuple(t[i : i + chunk] for t in data)
            losses = loss_fn(dict(params), batch)
            check_loss_output(losses, batch[0].shape[0])
            parts.append(losses)
    return torch.cat(parts)


def check_loss_output(losses: Tensor, batch_len: int) -> None:
    """A ``loss_fn`` output must be ``[B]`` or ``[B, T]`` with B the batch length."""
    if not isinstance(losses, Tensor):
        raise ConfigError(f"loss_fn must return a Tensor, got {type(losses).__name__}.")
    if losses.dim() not in (1, 2) or losses.shape[0] != batch_len:
        raise ConfigError(
            f"loss_fn must return per-unit losses of shape [B] or [B, T] with B = {batch_len} "
            f"(the batch length), got shape {tuple(losses.shape)}. Return the unreduced loss "
            "(e.g. reduction='none'), not its mean."
        )


@dataclass
class DrawContext:
    """What a draw callback sees.

    Attributes:
        draw: index of the draw, 0 ≤ draw < num_draws.
        step: SGLD updates done so far on each lane.
        batch_loss: ``[lanes]`` mean minibatch loss at the current state (the loss of the
            batch the next update uses; the full-data loss when ``batch_size`` is None).
        evaluate: ``evaluate(batch) -> [lanes, B, ...]`` per-unit losses of every lane at
            its current state on a batch shared by all lanes (no gradients).
    """

    draw: int
    step: int
    batch_loss: Tensor
    evaluate: Callable[[tuple[Tensor, ...]], Tensor]


class LaneForward(Protocol):
    """Per-unit losses of every lane at its own weights.

    ``views`` maps each moving parameter name to a ``[lanes, *shape]`` tensor (lane
    ``r * num_chains + c``: chain c of run r); parameters not in ``views`` stay at w*.
    With ``chain_of_lane`` None every lane uses the same ``batch`` (tensors ``[B, ...]``);
    otherwise batch tensors are ``[chains, B, ...]`` and lane i uses
    ``batch[chain_of_lane[i]]``. Returns ``[lanes, B]`` or ``[lanes, B, T]``, differentiable
    with respect to ``views``.
    """

    def __call__(
        self,
        views: dict[str, Tensor],
        batch: tuple[Tensor, ...],
        chain_of_lane: Tensor | None,
    ) -> Tensor: ...


class VmapLaneForward:
    """The generic ``LaneForward``: ``loss_fn`` vmapped over lanes, w* for the rest."""

    def __init__(self, loss_fn: LossFn, w_star: Mapping[str, Tensor]):
        self.w_star = dict(w_star)

        def call(moving: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
            merged = {k: moving.get(k, v) for k, v in self.w_star.items()}
            return loss_fn(merged, batch)

        self.per_lane = torch.func.vmap(call, in_dims=(0, 0))
        self.shared = torch.func.vmap(call, in_dims=(0, None))

    def __call__(
        self, views: dict[str, Tensor], batch: tuple[Tensor, ...], chain_of_lane: Tensor | None
    ) -> Tensor:
        if chain_of_lane is None:
            return self.shared(views, batch)
        return self.per_lane(views, tuple(t[chain_of_lane] for t in batch))


class GroupedLaneForward:
    """The generic ``LaneForward``: ``loss_fn`` vmapped over lanes, grouped by what they move.

    Runs are grouped by the set of parameters they move (their masks); per group only those
    parameters are batched (``[runs_in_group, chains, *shape]`` views of the lane buffer),
    every other parameter stays at w* unbatched. Within a group the vmaps nest chain-outer
    (the batch ``[chains, B, ...]`` batched by chain, in chunks of ``chain_chunk`` chains)
    and run-inner (the chain's batch ``[B, ...]`` shared by the group's runs), so under
    ``vmap``'s batching rules whatever does not depend on the group's parameters (for a run
    that moves block 1 only: the embedding and block 0) is computed once per chain, not
    once per lane, and autograd records nothing below the group's parameters. With a batch
    shared by all lanes (``chain_of_lane`` None) the same nesting runs with the batch
    unbatched. The groups' losses are put back in lane order.

    Equal to :class:`VmapLaneForward` up to float rounding (the same arithmetic on
    differently batched shapes). ``chain_chunk`` bounds the working set: the lanes of
    ``chain_chunk`` chains are evaluated together (intermediates ``[chain_chunk × runs, B,
    ...]``), which on a CPU keeps them nearer the caches than all lanes at once; None puts
    every chain in one call. Lanes must be run-major (lane ``r * num_chains + c``, as
    ``run_sgld`` orders them); any other ``chain_of_lane`` takes :class:`VmapLaneForward`.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        w_star: Mapping[str, Tensor],
        runs: Sequence[Run],
        num_chains: int,
        *,
        chain_chunk: int | None = 1,
    ):
        self.w_star = dict(w_star)
        self.num_runs, self.num_chains = len(runs), num_chains
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, run in enumerate(runs):
            key = tuple(
                n
                for n in self.w_star
                if n in run.masks and bool(torch.as_tensor(run.masks[n]).any())
            )
            groups.setdefault(key, []).append(i)
        #: ``(parameter names, run indices)`` per group, in order of first appearance.
        self.groups = list(groups.items())
        order = [r * num_chains + c for _, rs in self.groups for r in rs for c in range(num_chains)]
        lanes = len(order)
        self.inverse = (
            None
            if order == list(range(lanes))
            else torch.empty(lanes, dtype=torch.long).scatter_(
                0, torch.tensor(order), torch.arange(lanes)
            )
        )
        self.lane_chains = torch.arange(lanes) % num_chains
        self.fallback = VmapLaneForward(loss_fn, w_star)

        def call(moving: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
            merged = {k: moving.get(k, v) for k, v in self.w_star.items()}
            return loss_fn(merged, batch)

        over_runs = torch.func.vmap(call, in_dims=(0, None))
        # views [runs, chains, ...]: chains on dim 1; outputs back as [runs, chains, B, ...]
        self.per_chain = torch.func.vmap(
            over_runs, in_dims=(1, 0), out_dims=1, chunk_size=chain_chunk
        )
        self.shared = torch.func.vmap(
            over_runs, in_dims=(1, None), out_dims=1, chunk_size=chain_chunk
        )

    def _standard_chains(self, chain_of_lane: Tensor) -> bool:
        if chain_of_lane.shape != self.lane_chains.shape:
            return False
        return bool(torch.equal(chain_of_lane.cpu(), self.lane_chains))

    def __call__(
        self, views: dict[str, Tensor], batch: tuple[Tensor, ...], chain_of_lane: Tensor | None
    ) -> Tensor:
        if chain_of_lane is not None and not self._standard_chains(chain_of_lane):
            return self.fallback(views, batch, chain_of_lane)
        outs = []
        for names, run_ids in self.groups:
            first, last = run_ids[0], run_ids[-1] + 1
            contiguous = run_ids == list(range(first, last))
            moving = {}
            for n in names:
                v = views[n].unflatten(0, (self.num_runs, self.num_chains))
                moving[n] = v[first:last] if contiguous else v[torch.tensor(run_ids)]
            forward = self.shared if chain_of_lane is None else self.per_chain
            outs.append(forward(moving, batch).flatten(0, 1))  # [group runs × chains, B, ...]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        if self.inverse is not None:
            out = out[self.inverse.to(out.device)]
        return out


def make_lane_forward(
    loss_fn: LossFn, w_star: Mapping[str, Tensor], runs: Sequence[Run], num_chains: int
) -> LaneForward:
    """``loss_fn``'s own specialized lane forward for these runs if it has one, else the
    generic one (:class:`GroupedLaneForward`: one chain's lanes at a time on a CPU with at
    most 8 chains, all lanes of a group at once otherwise)."""
    special = getattr(loss_fn, "lane_forward", None)
    if special is not None:
        forward = special(w_star, runs, num_chains)
        if forward is not None:
            return forward
    on_cpu = all(v.device.type == "cpu" for v in w_star.values())
    # One chain at a time pays one vmap call per chain: worth it for the few chains of χ
    # (measured), not for the many chains of small models (LLC), which keep one call.
    chunk = 1 if on_cpu and num_chains <= 8 else None
    return GroupedLaneForward(loss_fn, w_star, runs, num_chains, chain_chunk=chunk)


class _LaneLayout:
    """The flat buffer of moving weights and, per lane, which coordinates move."""

    def __init__(self, params: Mapping[str, Tensor], runs: Sequence[Run], num_chains: int):
        moving = {name for run in runs for name, m in run.masks.items() if bool(m.any())}
        self.names = [name for name in params if name in moving]
        dtypes = {params[n].dtype for n in self.names}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise ConfigError(
                f"moving parameters must share one floating dtype, got {sorted(map(str, dtypes))}."
            )
        self.shapes = [tuple(params[n].shape) for n in self.names]
        sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        self.numel = self.offsets[-1]
        self.lanes = len(runs) * num_chains
        self.w_star = torch.cat([params[n].detach().reshape(-1) for n in self.names])
        run_masks = []
        for run in runs:
            parts = [
                run.masks[n].reshape(-1)
                if n in run.masks
                else torch.zeros(size, dtype=torch.bool, device=self.w_star.device)
                for n, size in zip(self.names, sizes, strict=True)
            ]
            run_masks.append(torch.cat(parts))
        lane_mask = torch.stack(run_masks).repeat_interleave(num_chains, dim=0)  # [lanes, numel]
        self.mask = lane_mask.to(self.w_star.dtype)
        self.moving_count = [int(m.sum()) for m in run_masks]
        # Flat positions in the [lanes * numel] buffer of each lane's moving coordinates.
        lane_ids, coords = lane_mask.nonzero(as_tuple=True)
        self.noise_positions = lane_ids * self.numel + coords

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-parameter views ``[lanes, *shape]`` into a ``[lanes, numel]`` buffer."""
        return {
            n: flat[:, a:b].view(self.lanes, *s)
            for n, a, b, s in zip(
                self.names, self.offsets[:-1], self.offsets[1:], self.shapes, strict=True
            )
        }


class _MinibatchStream:
    """Per-chain minibatch indices: each chain walks its own permutations of the data."""

    def __init__(self, n: int, batch_size: int | None, generators: list[torch.Generator]):
        self.full = batch_size is None or batch_size >= n
        self.n, self.batch_size, self.generators = n, batch_size or n, generators
        self.cursor = n  # forces a fresh permutation on first use
        self.perms: Tensor | None = None

    def next(self) -> Tensor | None:
        """``[chains, batch_size]`` indices, or None for the (shared) full batch."""
        if self.full:
            return None
        if self.cursor + self.batch_size > self.n:
            self.perms = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.cursor = 0
        assert self.perms is not None
        idx = self.perms[:, self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx


def run_sgld(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Tensor | Sequence[Tensor],
    runs: Sequence[Run],
    config: SamplerConfig,
    *,
    on_draw: Callable[[DrawContext], None],
    chain_ids: Sequence[int] | None = None,
    progress: bool | None = None,
    desc: str = "SGLD",
) -> None:
    """Step ``len(runs) * len(chain_ids)`` lanes of localized SGLD together.

    Every lane starts at the checkpoint ``params`` (w*). At each draw (see
    ``SamplerConfig.steps_between_draws``) ``on_draw`` is called with a ``DrawContext``.

    Args:
        loss_fn: per-unit loss, see the module docstring.
        params: the checkpoint w*; not modified.
        data: the training data the SGLD minibatches are drawn from.
        runs: the runs to step together; their masks must already be validated.
        config: the sampler settings.
        on_draw: called once per draw with the current lanes.
        chain_ids: global indices of the chains to run (default ``range(num_chains)``);
            they key the random streams, so chains 2 and 3 computed on their own equal
            chains 2 and 3 of a run of four.
        progress: show a progress bar (None: only on a terminal).
        desc: label of the progress bar.

    Raises:
        SamplerDivergence: a lane's loss became non-finite.
    """
    data = as_data_tuple(data)
    chain_ids = list(range(config.num_chains)) if chain_ids is None else list(chain_ids)
    if not chain_ids:
        raise ConfigError("chain_ids is empty: run at least one chain.")
    num_chains = len(chain_ids)
    w_star = {k: v.detach() for k, v in params.items()}
    layout = _LaneLayout(w_star, runs, num_chains)
    device, dtype = layout.w_star.device, layout.w_star.dtype
    lane_names = [(run.name, c) for run in runs for c in chain_ids]

    def seeded_generator(
        run_name: str, chain: int, stream: str, on: torch.device | str
    ) -> torch.Generator:
        g = torch.Generator(device=on)
        g.manual_seed(lane_seed(config.seed, run_name, chain, stream))
        return g

    noise_generators = [seeded_generator(r, c, "noise", device) for r, c in lane_names]
    batch_generators = [seeded_generator(BATCH_STREAM, c, "batch", "cpu") for c in chain_ids]
    batches = _MinibatchStream(data[0].shape[0], config.batch_size, batch_generators)
    lane_moving_counts = [layout.moving_count[i // num_chains] for i in range(layout.lanes)]
    chain_of_lane = torch.arange(layout.lanes, device=device) % num_chains
    lane_forward = make_lane_forward(loss_fn, w_star, runs, num_chains)

    def forward(flat: Tensor, batch: tuple[Tensor, ...], per_chain_batch: bool) -> Tensor:
        return lane_forward(layout.views(flat), batch, chain_of_lane if per_chain_batch else None)

    def evaluate_at(flat: Tensor) -> Callable[[tuple[Tensor, ...]], Tensor]:
        def evaluate(batch: tuple[Tensor, ...]) -> Tensor:
            with torch.no_grad():
                return forward(flat, tuple(batch), per_chain_batch=False)

        return evaluate

    # Validate the loss function once, unbatched, on a small slice.
    probe_batch = tuple(t[: min(2, t.shape[0])] for t in data)
    with torch.no_grad():
        check_loss_output(loss_fn(dict(w_star), probe_batch), probe_batch[0].shape[0])

    state = layout.w_star.expand(layout.lanes, -1).clone()
    w0 = layout.w_star.unsqueeze(0)
    sq_avg = torch.zeros_like(state) if config.preconditioner == "rmsprop" else None
    precond = noise_scale = torch.ones(())
    eps, n_beta, gamma = config.step_size, config.n_beta, config.localization
    total = config.num_steps

    bar = tqdm(
        total=total,
        desc=desc,
        disable=(not progress) if progress is not None else None,
        leave=False,
    )
    try:
        for step in range(total + 1):
            idx = batches.next()
            if idx is None:
                batch, per_chain = data, False
            else:
                batch, per_chain = tuple(t[idx.to(t.device)] for t in data), True
            need_grad = step < total
            leaf = state.detach().requires_grad_(need_grad)
            with torch.set_grad_enabled(need_grad):
                losses = forward(leaf, batch, per_chain)
                lane_loss = losses.reshape(layout.lanes, -1).mean(dim=1)
            finite = torch.isfinite(lane_loss)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0])
                run_name, chain = lane_names[bad]
                raise SamplerDivergence(
                    run=run_name,
                    chain=chain,
                    step=step,
                    loss=float(lane_loss[bad].detach()),
                    config=config,
                )
            since_burnin = step - config.num_burnin
            if since_burnin > 0 and since_burnin % config.steps_between_draws == 0:
                on_draw(
                    DrawContext(
                        draw=since_burnin // config.steps_between_draws - 1,
                        step=step,
                        batch_loss=lane_loss.detach(),
                        evaluate=evaluate_at(state),
                    )
                )
            if not need_grad:
                break
            (grad,) = torch.autograd.grad(lane_loss.sum(), leaf)
            with torch.no_grad():
                grad.mul_(n_beta)
                drift = grad.add_(state - w0, alpha=gamma)  # nβ∇L + γ(w − w*)
                noise = torch.cat(
                    [
                        torch.randn(m, generator=g, device=device, dtype=dtype)
                        for g, m in zip(noise_generators, lane_moving_counts, strict=True)
                    ]
                )
                if sq_avg is not None:
                    adapting = step < config.num_burnin or config.num_burnin == 0
                    if adapting:  # the running mean uses nβ∇L only, not the localization
                        grad.sub_(state - w0, alpha=gamma)
                        sq_avg.mul_(config.rmsprop_alpha).addcmul_(
                            grad, grad, value=1 - config.rmsprop_alpha
                        )
                        grad.add_(state - w0, alpha=gamma)
                        v_hat = sq_avg / (1 - config.rmsprop_alpha ** (step + 1))
                        precond = 1.0 / (v_hat.sqrt() + config.rmsprop_eps)
                        noise_scale = precond.reshape(-1)[layout.noise_positions].sqrt()
                    drift.mul_(precond)
                    noise.mul_(noise_scale)
                state.addcmul_(drift, layout.mask, value=-eps / 2)
                state.view(-1).index_add_(0, layout.noise_positions, noise, alpha=math.sqrt(eps))
            bar.update(1)
    finally:
        bar.close()
