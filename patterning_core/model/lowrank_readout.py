"""Per-token cross-entropy of logits that are a cached matrix plus a low-rank update.

In the restricted run of a last-layer head, the residual entering the final LayerNorm is a
part fixed by the batch plus the head's write ``z·W_O`` (rank d_head per token). Centring
is linear and the LayerNorm scale ``s`` is one number per token, so the logits are exactly

    logits[l, n, :] = s[l, n] · (A[a(l), n, :] + Z[l, n, :] @ C[l] + Z2[l, n, :] @ C2[l]) + c0

with ``A`` the centred, gained fixed part times ``W_U`` (computed once per batch and shared
by the lanes ``l`` that see it, ``a(l)``), ``Z @ C`` the moving head's write and ``Z2 @ C2``
a constant low-rank correction (the head's own write at w*, which ``A`` contains). Forming
that costs ``K`` multiply-adds per logit instead of ``d_model``, and the ``[N × V]`` logits
are never stored: the compiled kernels of ``cpu_kernels`` make one pass per row forward and
one backward; elsewhere (float64, GPU, kernels off) the same formula runs in torch.

Shapes: ``A [n_A, N, V]``, ``a_index [L]`` int64, ``Z [L, N, K]``, ``C [L, K, V]``,
``Z2 [L, N, K2]`` and ``C2 [L, K2, V]`` (or both None), ``s [L, N]``, ``c0 [V]``,
``targets [L, N]`` int64 → loss ``[L, N]``. Gradients reach ``Z``, ``C`` and ``s``; ``A``,
``Z2``, ``C2`` and ``c0`` are constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from patterning_core.model import cpu_kernels

__all__ = ["lowrank_cross_entropy"]


def lowrank_cross_entropy(
    A: Tensor,
    a_index: Tensor,
    Z: Tensor,
    C: Tensor,
    Z2: Tensor | None,
    C2: Tensor | None,
    s: Tensor,
    c0: Tensor,
    targets: Tensor,
) -> Tensor:
    """``-log softmax(logits)[target]`` per lane and row, ``[L, N]``; see the module docstring."""
    if (Z2 is None) != (C2 is None):
        raise ValueError("give Z2 and C2 together, or neither")
    constants = (t for t in (Z2, C2) if t is not None)
    if cpu_kernels.for_tensors(A, Z, C, s, c0, targets, *constants) is not None:
        return _LowRankCrossEntropy.apply(A, a_index, Z, C, Z2, C2, s, c0, targets)
    return _lowrank_cross_entropy_torch(A, a_index, Z, C, Z2, C2, s, c0, targets)


def _lowrank_cross_entropy_torch(A, a_index, Z, C, Z2, C2, s, c0, targets) -> Tensor:
    """The same formula in torch ops (autograd throughout), one lane at a time."""
    out = []
    for lane in range(Z.shape[0]):
        u = A[a_index[lane]] + Z[lane] @ C[lane]
        if Z2 is not None:
            u = u + Z2[lane] @ C2[lane]
        logits = u * s[lane, :, None] + c0
        out.append(F.cross_entropy(logits, targets[lane], reduction="none"))
    return torch.stack(out)


class _LowRankCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, a_index, Z, C, Z2, C2, s, c0, targets):  # type: ignore[override]
        lib, ptr = cpu_kernels.kernels(), cpu_kernels.ptr
        A, Z, C, s, c0, targets = (t.contiguous() for t in (A, Z, C, s, c0, targets))
        lanes, rows, K = Z.shape
        V = C.shape[-1]
        if Z2 is None:  # no correction: K2 = 0, the placeholders are never read
            K2, Z2 = 0, torch.zeros(lanes, 1, dtype=Z.dtype)
            C2 = Z2
        else:
            K2, Z2, C2 = Z2.shape[-1], Z2.contiguous(), C2.contiguous()
        a_of = a_index.tolist()
        loss = torch.empty(lanes, rows, dtype=Z.dtype)
        lse = torch.empty(lanes, rows, dtype=Z.dtype)

        def lane_forward(i: int) -> None:
            failed = lib.lowrank_loss_forward(
                ptr(A[a_of[i]]), ptr(Z[i]), ptr(C[i]), K, ptr(Z2[i]), ptr(C2[i]), K2,
                ptr(s[i]), ptr(c0), ptr(targets[i]), rows, V, ptr(lse[i]), ptr(loss[i]),
            )  # fmt: skip
            if failed:
                raise MemoryError("lowrank_loss_forward could not allocate its row buffer")

        cpu_kernels.for_each(lane_forward, lanes)
        ctx.save_for_backward(A, Z, C, Z2, C2, s, c0, targets, lse)
        ctx.a_of, ctx.K2 = a_of, K2
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        lib, ptr = cpu_kernels.kernels(), cpu_kernels.ptr
        A, Z, C, Z2, C2, s, c0, targets, lse = ctx.saved_tensors
        grad_loss = grad_loss.contiguous()
        lanes, rows, K = Z.shape
        V = C.shape[-1]
        dZ, dC, ds = torch.empty_like(Z), torch.zeros_like(C), torch.empty_like(s)

        def lane_backward(i: int) -> None:
            failed = lib.lowrank_loss_backward(
                ptr(A[ctx.a_of[i]]), ptr(Z[i]), ptr(C[i]), K, ptr(Z2[i]), ptr(C2[i]), ctx.K2,
                ptr(s[i]), ptr(c0), ptr(targets[i]), ptr(lse[i]), ptr(grad_loss[i]), rows, V,
                ptr(dZ[i]), ptr(dC[i]), ptr(ds[i]),
            )  # fmt: skip
            if failed:
                raise MemoryError("lowrank_loss_backward could not allocate its row buffers")

        cpu_kernels.for_each(lane_backward, lanes)
        return None, None, dZ, dC, None, None, ds, None, None
