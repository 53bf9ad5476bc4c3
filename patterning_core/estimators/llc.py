"""Local learning coefficient (LLC), and its weight-refined variant.

    λ̂(w*) = nβ · (E[L_n(w)] − L_n(w*))

E over the draws of a localized SGLD run around the checkpoint w* (burn-in excluded).
E[L_n(w)] is estimated by the minibatch losses at the draws (unbiased for L_n at each
draw, since the minibatch is drawn independently of the current weights); L_n(w*) is the
exact full-data loss at w* unless given. Restricting the run to some coordinates gives
the weight-refined LLC of those weights (method.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from patterning_core.sampling.diagnostics import split_rhat
from patterning_core.sampling.sgld import (
    DrawContext,
    LossFn,
    Run,
    SamplerConfig,
    as_data_tuple,
    evaluate_in_chunks,
    full_run,
    run_sgld,
    validate_masks,
)


@dataclass(frozen=True)
class LLCResult:
    """Result of ``estimate_llc``.

    Attributes:
        mean: λ̂ over all chains and draws.
        std: standard deviation of the per-chain estimates (NaN with one chain).
        per_chain: ``[chain]`` λ̂ of each chain.
        loss_trace: ``[chain, draw]`` minibatch loss at each draw.
        init_loss: L_n(w*).
        rhat: split-R̂ of ``loss_trace``.
        config: the sampler settings used.
    """

    mean: float
    std: float
    per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    rhat: float
    config: SamplerConfig

    def __str__(self) -> str:
        return (
            f"LLC {self.mean:.4f} ± {self.std:.4f} (std over {len(self.per_chain)} "
            f"chains, R̂ {self.rhat:.3f}, L(w*) {self.init_loss:.5f})"
        )


def estimate_llc(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    data: Tensor | Sequence[Tensor],
    config: SamplerConfig,
    *,
    restrict: Mapping[str, Tensor] | None = None,
    init_loss: float | None = None,
    progress: bool | None = None,
) -> LLCResult:
    """Estimate the (weight-refined) LLC at the checkpoint ``params``.

    Args:
        loss_fn: ``loss_fn(params, batch) -> [B]`` or ``[B, T]`` per-unit losses.
        params: the checkpoint w*, ``{name: tensor}``.
        data: tuple of tensors indexed along dim 0 (the n training units).
        config: sampler settings; ``n_beta`` is nβ in the formula above.
        restrict: ``{param_name: bool mask}``; only masked coordinates move (the rest stay
            at w*). None moves every coordinate.
        init_loss: L_n(w*) if already known; otherwise computed over all of ``data``.
        progress: show a progress bar (None: only on a terminal).
    """
    data = as_data_tuple(data)
    params = {k: v.detach() for k, v in params.items()}
    if restrict is None:
        run = full_run(params, name="llc")
    else:
        run = Run("llc", validate_masks(params, restrict, where="restrict"))
    if init_loss is None:
        init_loss = float(evaluate_in_chunks(loss_fn, params, data).double().mean())

    trace = np.zeros((config.num_chains, config.num_draws))

    def record(ctx: DrawContext) -> None:
        trace[:, ctx.draw] = ctx.batch_loss.double().cpu().numpy()

    with torch.enable_grad():
        run_sgld(
            loss_fn, params, data, [run], config, on_draw=record, progress=progress, desc="LLC"
        )
    per_chain = config.n_beta * (trace.mean(axis=1) - init_loss)
    return LLCResult(
        mean=float(per_chain.mean()),
        std=float(per_chain.std(ddof=1)) if len(per_chain) > 1 else float("nan"),
        per_chain=per_chain,
        loss_trace=trace,
        init_loss=init_loss,
        rhat=split_rhat(trace),
        config=config,
    )
