"""The restricted-head fast path computes what the generic vmapped path computes.

Tolerances: both paths evaluate the same float32 arithmetic regrouped (cached residuals,
fused attention and cross-entropy kernels). Per-token losses of order 1–10 and gradients of
order 10 then agree to a few float32 ulps times the depth of the computation: 1e-4
absolute is ~100 ulps at these magnitudes, far below any sampling effect (SGLD noise moves
losses by ~1e-2 per step at these settings).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.model import cpu_kernels, fused_loss
from patterning_core.model.fused_loss import chunk_rows, linear_cross_entropy
from patterning_core.model.restricted_heads import (
    HeadLaneForward,
    LoopLaneForward,
    TransformerLoss,
    head_of_run,
)
from patterning_core.model.transformer import components, init_params, make_loss_fn, preset
from patterning_core.sampling.sgld import Run, SamplerConfig, VmapLaneForward, _LaneLayout, full_run

CFG = preset("tiny")


def _perturbed_params(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = init_params(CFG, seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in params.items()}


def _head_runs(layer: int) -> list[Run]:
    comps = components(CFG)
    return [Run(f"L{layer}H{h}", comps[f"L{layer}H{h}"]) for h in range(CFG.n_heads)]


@pytest.mark.parametrize("kernels", ["compiled kernels", "torch only"])
@pytest.mark.parametrize("layer", [0, 1])
def test_fast_forward_and_gradient_equal_generic(layer: int, kernels: str, monkeypatch) -> None:
    """Layer 1 is the last: with the kernels its lanes take the low-rank readout."""
    if kernels == "torch only":
        monkeypatch.setattr(cpu_kernels, "kernels", lambda: None)
    params, runs, chains = _perturbed_params(), _head_runs(layer), 3
    layout = _LaneLayout(params, runs, chains)
    fast = TransformerLoss(CFG).lane_forward(params, runs, chains)
    generic = VmapLaneForward(make_loss_fn(CFG), params)
    assert isinstance(fast, HeadLaneForward)
    lowrank = layer == CFG.n_layers - 1 and cpu_kernels.kernels() is not None
    assert (fast.readout is not None) == lowrank
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(layout.lanes, layout.numel, generator=gen) * layout.mask
    flat = (layout.w_star + 0.05 * noise).requires_grad_()
    tokens = torch.randint(0, CFG.d_vocab, (chains, 4, CFG.n_ctx), generator=gen)
    chain_of_lane = torch.arange(layout.lanes) % chains
    got = fast(layout.views(flat), (tokens,), chain_of_lane)
    want = generic(layout.views(flat), (tokens,), chain_of_lane)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    (g_fast,) = torch.autograd.grad(got.sum(), flat)
    (g_generic,) = torch.autograd.grad(want.sum(), flat)
    # The generic path also differentiates the other heads' slices; the mask drops them.
    assert float((g_fast * (1 - layout.mask)).abs().max()) == 0.0
    torch.testing.assert_close(g_fast, g_generic * layout.mask, atol=1e-4, rtol=0)
    shared = torch.randint(0, CFG.d_vocab, (5, CFG.n_ctx), generator=gen)
    torch.testing.assert_close(
        fast(layout.views(flat), (shared,), None),
        generic(layout.views(flat), (shared,), None),
        atol=1e-4,
        rtol=0,
    )
    # A shared batch is cached: a second call with equal tokens reuses it, a new one does not.
    again = fast(layout.views(flat), (shared.clone(),), None)
    other = fast(layout.views(flat), (shared.flip(0),), None)
    torch.testing.assert_close(
        again, generic(layout.views(flat), (shared,), None), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        other, generic(layout.views(flat), (shared.flip(0),), None), atol=1e-4, rtol=0
    )


def test_last_layer_regrouping_is_exact_in_float64() -> None:
    """The low-rank readout of last-layer heads is the dense readout regrouped: in float64
    the two agree to rounding (~1e-15 relative on losses of order 1-10)."""
    params = {k: v.double() for k, v in _perturbed_params().items()}
    runs, chains, last = _head_runs(CFG.n_layers - 1), 2, CFG.n_layers - 1
    layout = _LaneLayout(params, runs, chains)
    lane_heads = torch.arange(CFG.n_heads).repeat_interleave(chains)
    fast = HeadLaneForward(params, CFG, last, lane_heads, lowrank=True)
    assert fast.readout is not None
    generic = VmapLaneForward(make_loss_fn(CFG), params)
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(layout.lanes, layout.numel, generator=gen, dtype=torch.float64)
    flat = (layout.w_star + 0.05 * noise * layout.mask).requires_grad_()
    tokens = torch.randint(0, CFG.d_vocab, (chains, 3, CFG.n_ctx), generator=gen)
    chain_of_lane = torch.arange(layout.lanes) % chains
    for batch, lanes_batch in (((tokens,), chain_of_lane), ((tokens[0],), None)):
        got = fast(layout.views(flat), batch, lanes_batch)
        want = generic(layout.views(flat), batch, lanes_batch)
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)
        (g_got,) = torch.autograd.grad(got.sum(), flat)
        (g_want,) = torch.autograd.grad(want.sum(), flat)
        torch.testing.assert_close(g_got, g_want * layout.mask, atol=1e-10, rtol=0)


def test_runs_other_than_single_heads_take_the_lane_loop() -> None:
    params, loss = _perturbed_params(), TransformerLoss(CFG)
    comps = components(CFG)
    generic = VmapLaneForward(make_loss_fn(CFG), params)
    gen = torch.Generator().manual_seed(5)
    for runs in (
        [_head_runs(0)[0], _head_runs(1)[0]],
        [full_run(params)],
        [Run("embed", comps["embed"]), Run("unembed", comps["unembed"])],
    ):
        forward = loss.lane_forward(params, runs, 2)
        assert isinstance(forward, LoopLaneForward)
        layout = _LaneLayout(params, runs, 2)
        noise = torch.randn(layout.lanes, layout.numel, generator=gen) * layout.mask
        flat = (layout.w_star + 0.05 * noise).requires_grad_()
        tokens = torch.randint(0, CFG.d_vocab, (2, 3, CFG.n_ctx), generator=gen)
        chain_of_lane = torch.arange(layout.lanes) % 2
        got = forward(layout.views(flat), (tokens,), chain_of_lane)
        want = generic(layout.views(flat), (tokens,), chain_of_lane)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        (g_got,) = torch.autograd.grad(got.sum(), flat)
        (g_want,) = torch.autograd.grad(want.sum(), flat)
        torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=0)


def test_head_of_run_recognizes_exactly_one_head() -> None:
    comps = components(CFG)
    two_heads = {
        k: a | b for (k, a), b in zip(comps["L0H0"].items(), comps["L0H1"].values(), strict=True)
    }
    assert head_of_run(Run("two", two_heads), CFG) is None
    partial = {k: v.clone() for k, v in comps["L1H1"].items()}
    partial["blocks.1.attn.W_Q"][1, 0, 0] = False
    assert head_of_run(Run("partial", partial), CFG) is None
    assert head_of_run(_head_runs(1)[1], CFG) == (1, 1)


def test_chi_through_fast_path_equals_generic_path() -> None:
    """A whole χ estimate, sampled along the same random streams by both paths."""
    params = _perturbed_params()
    data = torch.randint(
        0, CFG.d_vocab, (64, CFG.n_ctx), generator=torch.Generator().manual_seed(3)
    )
    probes = data[:2]
    config = SamplerConfig(
        step_size=1e-4,
        n_beta=10.0,
        localization=100.0,
        num_chains=2,
        num_draws=8,
        num_burnin=0,
        steps_between_draws=1,
        batch_size=8,
        seed=0,
    )
    comps = components(CFG)  # heads (head path), embed and unembed (lane loop)
    fast = estimate_susceptibilities(TransformerLoss(CFG), params, data, probes, comps, config)
    slow = estimate_susceptibilities(make_loss_fn(CFG), params, data, probes, comps, config)
    # χ is a covariance of losses over 8 draws × 2 chains; its scale here is ~1e-3. The two
    # trajectories differ by rounding only, which 8 contracting steps do not amplify.
    scale = float(abs(slow).max())
    assert scale > 0
    assert float(abs(fast - slow).max()) < 1e-3 * scale


@pytest.mark.parametrize("chunk", [None, 7, 10_000], ids=["cpu-chunks", "small", "one-chunk"])
def test_linear_cross_entropy_matches_unfused(monkeypatch, chunk) -> None:
    """Whatever the chunk size (the CPU's, a small one, one chunk for all rows as on an
    accelerator): the unfused loss and its gradients."""
    if chunk is not None:
        monkeypatch.setattr(fused_loss, "CHUNK_ROWS", chunk)
    gen = torch.Generator().manual_seed(4)
    n, d, v = 600, 16, 40  # n spans several chunks and a partial last chunk
    x = torch.randn(n, d, generator=gen, requires_grad=True)
    W = torch.randn(d, v, generator=gen, requires_grad=True)
    b = torch.randn(v, generator=gen, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.rand(n, generator=gen)
    got = linear_cross_entropy(x, W, b, target)
    want = F.cross_entropy(x @ W + b, target, reduction="none")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    grads_got = torch.autograd.grad((got * upstream).sum(), (x, W, b))
    grads_want = torch.autograd.grad((want * upstream).sum(), (x, W, b))
    for a, e in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_chunks_are_large_off_the_cpu() -> None:
    """On the CPU a chunk's logits fit the cache; elsewhere (here a meta tensor stands in
    for an accelerator's) one chunk holds up to 2**26 logits."""
    assert chunk_rows(torch.empty(3, 8), 512) == fused_loss.CHUNK_ROWS
    assert chunk_rows(torch.empty(3, 8, device="meta"), 512) == 2**26 // 512


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_chi_on_gpu_equals_cpu() -> None:
    """The same code on a GPU: χ of a short run agrees with the CPU's (rounding only)."""
    params = _perturbed_params()
    gen = torch.Generator().manual_seed(3)
    data = torch.randint(0, CFG.d_vocab, (64, CFG.n_ctx), generator=gen)
    config = SamplerConfig(
        step_size=1e-4,
        n_beta=10.0,
        localization=100.0,
        num_chains=2,
        num_draws=8,
        batch_size=8,
        seed=0,
    )
    comps = {k: v for k, v in components(CFG).items() if k.startswith("L")}
    loss = TransformerLoss(CFG)
    cpu = estimate_susceptibilities(loss, params, data, data[:2], comps, config)
    cuda_params = {k: v.cuda() for k, v in params.items()}
    cuda_comps = {c: {k: m.cuda() for k, m in ms.items()} for c, ms in comps.items()}
    gpu = estimate_susceptibilities(
        loss, cuda_params, data.cuda(), data[:2].cuda(), cuda_comps, config
    )
    # Noise is drawn on the device, so GPU and CPU chains differ: compare statistically
    # only in scale (both finite, same order of magnitude), and exactly on the minibatches.
    assert bool(np.isfinite(gpu.values).all())
    ratio = float(abs(gpu).mean() / abs(cpu).mean())
    assert 0.3 < ratio < 3.0
