"""The compiled cross-entropy kernels compute what float64 torch computes, and everything
falls back to torch when they are off or cannot be compiled.

Tolerances (float32, unit roundoff u = 6e-8): a logit built from ``K ≤ 16`` products of
O(3) terms carries ≲ 16·u·3 ≈ 3e-6 absolute error, the log-sum-exp of 512 such logits the
same order plus the exponential's 2e-7 relative error, so per-row losses agree with float64
to ~1e-5 absolute; gradients are sums of 512 products bounded by the largest term, so
relative to their largest entry they agree to ~√512·u ≈ 1e-6. The asserts use 2e-5 and
1e-4 (a 2-10× margin, far below any effect on χ).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patterning_core.model import cpu_kernels
from patterning_core.model.fused_loss import linear_cross_entropy
from patterning_core.model.lowrank_readout import lowrank_cross_entropy

needs_kernels = pytest.mark.skipif(
    cpu_kernels.kernels() is None, reason="no working C compiler on this machine"
)


@pytest.fixture
def kernels_off(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "kernels", lambda: None)


def _relative_max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got.double() - want).abs().max() / want.abs().max()).detach())


@needs_kernels
def test_row_kernels_match_float64_including_extreme_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    n, d, v = 700, 16, 512  # several 256-row chunks and a partial one
    x = torch.randn(n, d, generator=gen)
    x[:5] *= 300  # logits spanning thousands: the exponential's clamp and range reduction
    x.requires_grad_()
    W, b = torch.randn(d, v, generator=gen), torch.randn(v, generator=gen)
    target = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.rand(n, generator=gen)
    got = linear_cross_entropy(x, W, b, target)
    (dx,) = torch.autograd.grad((got * upstream).sum(), x)
    x64 = x.detach().double().requires_grad_()
    want = F.cross_entropy(x64 @ W.double() + b.double(), target, reduction="none")
    (dx64,) = torch.autograd.grad((want * upstream.double()).sum(), x64)
    assert torch.isfinite(got).all()
    typical = slice(5, None)  # rows of ordinary scale: the absolute bound of the docstring
    assert float((got[typical].double() - want[typical]).abs().max().detach()) < 2e-5
    assert _relative_max_error(got[:5], want[:5]) < 1e-5  # huge losses: relative
    assert _relative_max_error(dx, dx64) < 1e-4


def _lowrank_inputs(seed: int, correction: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    lanes, n_a, rows, K, V = 3, 2, 130, 8, 512

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(dtype)

    return dict(
        A=rand(n_a, rows, V, scale=3.0),
        a_index=torch.tensor([1, 0, 1]),
        Z=rand(lanes, rows, K, scale=0.3),
        C=rand(lanes, K, V),
        Z2=rand(lanes, rows, K, scale=0.3) if correction else None,
        C2=rand(lanes, K, V) if correction else None,
        s=(torch.rand(lanes, rows, generator=gen) + 0.5).to(dtype),
        c0=rand(V),
        targets=torch.randint(0, V, (lanes, rows), generator=gen),
    )


def _lowrank_with_grads(inputs: dict, upstream: torch.Tensor):
    leaves = {k: inputs[k].clone().requires_grad_() for k in ("Z", "C", "s")}
    loss = lowrank_cross_entropy(**{**inputs, **leaves})
    grads = torch.autograd.grad((loss * upstream.to(loss.dtype)).sum(), list(leaves.values()))
    return loss, grads


@needs_kernels
@pytest.mark.parametrize("correction", [True, False])
def test_lowrank_kernel_matches_float64(correction: bool) -> None:
    inputs = _lowrank_inputs(1, correction)
    upstream = torch.rand(inputs["Z"].shape[:2], generator=torch.Generator().manual_seed(9))
    got, got_grads = _lowrank_with_grads(inputs, upstream)
    as64 = {
        k: v.double() if v is not None and v.is_floating_point() else v for k, v in inputs.items()
    }
    want, want_grads = _lowrank_with_grads(as64, upstream)
    # The float64 call ran the torch formula (the kernels take float32 only).
    assert float((got.double() - want).abs().max().detach()) < 2e-5
    for g, w in zip(got_grads, want_grads, strict=True):
        assert _relative_max_error(g, w) < 1e-4


def test_lowrank_torch_formula_is_the_dense_cross_entropy(kernels_off) -> None:
    """The fallback's formula, written out once more densely, in float64."""
    inputs = _lowrank_inputs(2, correction=True, dtype=torch.float64)
    got = lowrank_cross_entropy(**inputs)
    for lane, a in enumerate(inputs["a_index"].tolist()):
        u = inputs["A"][a] + inputs["Z"][lane] @ inputs["C"][lane]
        u = u + inputs["Z2"][lane] @ inputs["C2"][lane]
        logits = inputs["s"][lane, :, None] * u + inputs["c0"]
        logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        want = -logp.gather(1, inputs["targets"][lane, :, None]).squeeze(1)
        torch.testing.assert_close(got[lane], want, atol=1e-12, rtol=0)


def test_failed_compile_warns_and_falls_back(monkeypatch) -> None:
    inputs = _lowrank_inputs(3, correction=True)
    want = lowrank_cross_entropy(**inputs)
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    cpu_kernels.kernels.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="fused CPU kernels are not available"):
            assert cpu_kernels.kernels() is None
        got = lowrank_cross_entropy(**inputs)
    finally:
        monkeypatch.delenv("CC")
        cpu_kernels.kernels.cache_clear()
    assert float((got - want).abs().max()) < 2e-5


def test_switched_off_by_environment(monkeypatch) -> None:
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    cpu_kernels.kernels.cache_clear()
    try:
        assert cpu_kernels.kernels() is None
        assert cpu_kernels.for_tensors(torch.zeros(3)) is None
    finally:
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
        cpu_kernels.kernels.cache_clear()


@needs_kernels
def test_threads_split_lanes_with_the_same_result(monkeypatch) -> None:
    """With several torch threads the lanes run on a pool; the numbers do not change."""
    inputs = _lowrank_inputs(4, correction=True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = lowrank_cross_entropy(**inputs)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    calls = []
    original = cpu_kernels._pool
    monkeypatch.setattr(cpu_kernels, "_pool", lambda *a: calls.append(a) or original(*a))
    several = lowrank_cross_entropy(**inputs)
    assert calls, "the pool was not used"
    assert torch.equal(one, several)
