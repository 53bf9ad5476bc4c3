"""The generic lane forward grouped by moving parameters equals the plain vmap over lanes.

``GroupedLaneForward`` (runs grouped by the parameters they move, chain-outer / run-inner
vmaps) and ``VmapLaneForward`` (every moving parameter batched over all lanes) evaluate
the same float arithmetic on differently batched shapes, so they agree to rounding.

Tolerances, in float64 (unit roundoff 1.1e-16): per-token losses of order 1–10 through a
few hundred ops agree to ~1e-14 absolute; 1e-11 leaves a wide margin and is still ten
orders of magnitude below any sampling effect. Through SGLD the difference cannot grow
much: the localized update contracts deviations (ε·(nβ·curvature + γ) < 4), each step adds
~ε·nβ·1e-14 to the weights, and χ is a covariance of losses over draws, so the χ of the
two paths should agree to ~1e-12 of max |χ|; the test allows 1e-9 and checks that a
different seed moves χ by more than 1e-2 of max |χ| (the tolerance discriminates).
"""

from __future__ import annotations

import pytest
import torch

from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.model.transformer import components, init_params, make_loss_fn, preset
from patterning_core.sampling import sgld
from patterning_core.sampling.sgld import (
    GroupedLaneForward,
    Run,
    SamplerConfig,
    VmapLaneForward,
    _LaneLayout,
    full_run,
    make_lane_forward,
)

CFG = preset("tiny")


def _params() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    params = init_params(CFG, 1)
    return {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double() for k, v in params.items()}


def _run_sets(params) -> dict[str, list[Run]]:
    comps = components(CFG)

    def runs(*names: str) -> list[Run]:
        return [Run(n, comps[n]) for n in names]

    return {
        "heads of block 1": runs("L1H0", "L1H1"),
        "heads of block 0": runs("L0H0", "L0H1"),
        "full run": [full_run(params)],
        # groups interleaved in run order: the losses go back to lane order
        "mixed": runs("L0H0", "L1H0", "embed", "L0H1", "unembed", "L1H1"),
    }


@pytest.mark.parametrize("which", ["heads of block 1", "heads of block 0", "full run", "mixed"])
@pytest.mark.parametrize("chain_chunk", [1, 2, None])
def test_grouped_forward_and_gradient_equal_plain_vmap(which: str, chain_chunk) -> None:
    params, chains = _params(), 3
    runs = _run_sets(params)[which]
    layout = _LaneLayout(params, runs, chains)
    loss_fn = make_loss_fn(CFG)
    grouped = GroupedLaneForward(loss_fn, params, runs, chains, chain_chunk=chain_chunk)
    plain = VmapLaneForward(loss_fn, params)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(layout.lanes, layout.numel, generator=gen, dtype=torch.float64)
    flat = (layout.w_star + 0.05 * noise * layout.mask).requires_grad_()
    tokens = torch.randint(0, CFG.d_vocab, (chains, 4, CFG.n_ctx), generator=gen)
    chain_of_lane = torch.arange(layout.lanes) % chains
    got = grouped(layout.views(flat), (tokens,), chain_of_lane)
    want = plain(layout.views(flat), (tokens,), chain_of_lane)
    assert got.shape == want.shape == (layout.lanes, 4, CFG.n_ctx - 1)
    torch.testing.assert_close(got, want, atol=1e-11, rtol=0)
    (g_got,) = torch.autograd.grad(got.sum(), flat)
    (g_want,) = torch.autograd.grad(want.sum(), flat)
    # Only the group's own parameters are batched: coordinates a lane's run does not move
    # may get no gradient; the sampler's mask drops them either way.
    torch.testing.assert_close(g_got * layout.mask, g_want * layout.mask, atol=1e-11, rtol=0)
    shared = torch.randint(0, CFG.d_vocab, (5, CFG.n_ctx), generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(
            grouped(layout.views(flat), (shared,), None),
            plain(layout.views(flat), (shared,), None),
            atol=1e-11,
            rtol=0,
        )


def test_groups_follow_the_moving_parameters() -> None:
    params = _params()
    runs = _run_sets(params)["mixed"]
    grouped = GroupedLaneForward(make_loss_fn(CFG), params, runs, 2)
    assert [ids for _, ids in grouped.groups] == [[0, 3], [1, 5], [2], [4]]
    block0 = {n for n in params if n.startswith("blocks.0.attn.") and not n.endswith("b_O")}
    assert set(grouped.groups[0][0]) == block0
    assert grouped.inverse is not None
    in_order = GroupedLaneForward(make_loss_fn(CFG), params, _run_sets(params)["full run"], 2)
    assert in_order.inverse is None


def test_lanes_in_another_chain_order_take_the_plain_vmap() -> None:
    params, chains = _params(), 2
    runs = _run_sets(params)["heads of block 1"]
    layout = _LaneLayout(params, runs, chains)
    loss_fn = make_loss_fn(CFG)
    grouped = GroupedLaneForward(loss_fn, params, runs, chains)
    gen = torch.Generator().manual_seed(3)
    flat = layout.w_star + 0.05 * layout.mask * torch.randn(
        layout.lanes, layout.numel, generator=gen, dtype=torch.float64
    )
    tokens = torch.randint(0, CFG.d_vocab, (chains, 3, CFG.n_ctx), generator=gen)
    chain_of_lane = torch.arange(layout.lanes).flip(0) % chains
    with torch.no_grad():
        got = grouped(layout.views(flat), (tokens,), chain_of_lane)
        want = VmapLaneForward(loss_fn, params)(layout.views(flat), (tokens,), chain_of_lane)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_plain_loss_fn_takes_the_grouped_forward() -> None:
    params = _params()
    forward = make_lane_forward(make_loss_fn(CFG), params, _run_sets(params)["mixed"], 2)
    assert isinstance(forward, GroupedLaneForward)


def test_chi_equals_the_plain_vmap_path_in_float64(monkeypatch) -> None:
    params = _params()
    gen = torch.Generator().manual_seed(4)
    data = torch.randint(0, CFG.d_vocab, (64, CFG.n_ctx), generator=gen)
    probes = torch.randint(0, CFG.d_vocab, (2, CFG.n_ctx), generator=gen)
    comps = {k: v for k, v in components(CFG).items() if k.startswith("L") or k == "unembed"}
    config = SamplerConfig(
        step_size=1e-3,
        n_beta=30.0,
        localization=300.0,
        num_chains=2,
        num_draws=8,
        batch_size=8,
        seed=3,
    )
    loss_fn = make_loss_fn(CFG)
    got = estimate_susceptibilities(loss_fn, params, data, probes, comps, config)
    other_seed = estimate_susceptibilities(
        loss_fn, params, data, probes, comps, config.replace(seed=4)
    )
    made = []

    def plain_vmap(f, w, runs, chains):
        made.append(VmapLaneForward(f, w))
        return made[-1]

    monkeypatch.setattr(sgld, "make_lane_forward", plain_vmap)
    want = estimate_susceptibilities(loss_fn, params, data, probes, comps, config)
    assert len(made) == 4  # heads of block 0, of block 1, the unembedding, the full run
    assert got.dtype == want.dtype
    scale = float(abs(want).max())
    assert scale > 0
    assert float(abs(got - want).max()) < 1e-9 * scale
    assert float(abs(other_seed - want).max()) > 1e-2 * scale  # the tolerance discriminates
