"""Per-row cross-entropy of a linear readout, fused and chunked.

``linear_cross_entropy(x, W, b, target)`` equals
``F.cross_entropy(x @ W + b, target, reduction="none")`` (up to float rounding) but never
holds the ``[N, V]`` logits: rows are processed in chunks small enough to stay in the CPU
cache (on an accelerator, large chunks: :func:`chunk_rows`), and the backward recomputes
each chunk's logits instead of saving them. On the
unembedding of a small transformer (V = 512) the elementwise passes over the logits, not
the matmul, dominate the unfused loss; fusing them made forward + backward 2.6× faster on
one core (``benchmarks/chi_workload.py``). For float32 on the CPU each chunk's row passes
(log-sum-exp and loss; the softmax gradient) run in the compiled kernels of
``cpu_kernels`` when they are available (about 2× faster than the torch ops,
``benchmarks/custom_kernels.py``).

Shapes: ``x [N, D]``, ``W [D, V]``, ``b [V]``, ``target int64 [N]`` → loss ``[N]``.
Gradients flow to ``x``, ``W`` and ``b`` (only those that require them are computed).
Not for ``torch.func`` transforms (a plain ``autograd.Function``); the vmapped generic
path uses ``transformer.per_token_loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patterning_core.model import cpu_kernels

__all__ = ["linear_cross_entropy"]

CHUNK_ROWS = 256  # on the CPU: a chunk's logits stay in the cache
ACCELERATOR_CHUNK_ELEMENTS = 2**26  # elsewhere: as few chunks as 256 MB of float32 logits allow


def chunk_rows(x: Tensor, vocab: int) -> int:
    """Rows per chunk: ``CHUNK_ROWS`` on the CPU; on an accelerator, where each chunk costs
    kernel launches rather than cache misses, as many as keep ``rows × vocab`` logits within
    ``ACCELERATOR_CHUNK_ELEMENTS`` (a chunk's rows are computed alike whatever its size)."""
    if x.device.type == "cpu":
        return CHUNK_ROWS
    return max(CHUNK_ROWS, ACCELERATOR_CHUNK_ELEMENTS // max(vocab, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor, target: Tensor) -> Tensor:
        n = x.shape[0]
        target = target.contiguous()
        loss = torch.empty(n, dtype=x.dtype, device=x.device)
        lse = torch.empty(n, dtype=x.dtype, device=x.device)
        lib = cpu_kernels.for_tensors(x, W, b, target)
        step = chunk_rows(x, W.shape[1])
        for i in range(0, n, step):
            rows = slice(i, i + step)
            logits = torch.addmm(b, x[rows], W)
            if lib is not None:
                ptr = cpu_kernels.ptr
                lib.lse_rows(
                    ptr(logits), ptr(target[rows]), *logits.shape, ptr(lse[rows]), ptr(loss[rows])
                )
                continue
            lse[rows] = torch.logsumexp(logits, dim=1)
            loss[rows] = lse[rows] - logits.gather(1, target[rows, None]).squeeze(1)
        ctx.save_for_backward(x, W, b, target, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        x, W, b, target, lse = ctx.saved_tensors
        need_x, need_W, need_b = ctx.needs_input_grad[:3]
        dx = torch.empty_like(x) if need_x else None
        dW = torch.zeros_like(W) if need_W else None
        db = torch.zeros_like(b) if need_b else None
        grad_loss = grad_loss.contiguous()
        lib = cpu_kernels.for_tensors(x, W, b, grad_loss)
        step = chunk_rows(x, W.shape[1])
        for i in range(0, x.shape[0], step):
            rows = slice(i, i + step)
            # d loss / d logits = softmax(logits) − onehot(target), times the upstream grad.
            p = torch.addmm(b, x[rows], W)
            if lib is not None:
                ptr = cpu_kernels.ptr
                args = (ptr(p), ptr(lse[rows]), ptr(target[rows]), ptr(grad_loss[rows]))
                lib.softmax_grad_rows(*args, *p.shape)
            else:
                p.sub_(lse[rows, None]).exp_()
                p[torch.arange(p.shape[0], device=p.device), target[rows]] -= 1
                p.mul_(grad_loss[rows, None])
            if dx is not None:
                torch.mm(p, W.t(), out=dx[rows])
            if dW is not None:
                dW.addmm_(x[rows].t(), p)
            if db is not None:
                db.add_(p.sum(dim=0))
        return dx, dW, db, None


def linear_cross_entropy(x: Tensor, W: Tensor, b: Tensor, target: Tensor) -> Tensor:
    """``-log softmax(x @ W + b)[target]`` per row, ``[N]``; see the module docstring."""
    return _LinearCrossEntropy.apply(x, W, b, target)
