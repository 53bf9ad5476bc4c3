"""TransformerLens ``HookedTransformer`` models through the adapter and its fast path.

The proof of equality: the built-in transformer's weights in a ``HookedTransformer`` give
the same χ through the TransformerLens adapter as through the built-in path, in float64,
on the same random streams (the adapter orders parameters as the built-in model does).

Tolerance of that test, derived: the two paths evaluate the same function with different
groupings of float64 operations (TransformerLens's LayerNorm divides by the scale where the
built-in one multiplies by its reciprocal, einsum against matmul), so per-token losses of
order 4 agree to a few ulps, ~1e-15 (measured below, asserted < 1e-13). SGLD at these
settings contracts (each step pulls by ε·γ/2 = 5e-3 toward w*, and nβ·ε times the loss
curvature is far below 1), so over 6 + 1 steps per draw the trajectories stay within
~steps × 1e-15 of each other. χ is a covariance of losses whose spread σ is ~1e-2; moving
every loss by δ moves χ by ≲ 2δσ, i.e. ~1e-13 relative to χ ~ σ². We assert 1e-9 relative:
four orders above that estimate, and eight below what a different seed does (checked:
O(1) relative).

Fast path against the model's own forward (other tests): float64 losses of order 4 through
at most 3 blocks agree to ~1e-14; 1e-10 absolute on losses and gradients (gradients of
order 1-10) is a loose bound that still catches any wrong term (a wrong term is O(1e-2) or
more). The float32 case (the compiled low-rank readout) uses the built-in tests' 1e-4.
"""

from __future__ import annotations

import pytest
import torch

tl = pytest.importorskip("transformer_lens", reason="the optional extra 'tl' is not installed")

from safetensors.torch import save_file  # noqa: E402

from patterning_core.estimators.susceptibility import estimate_susceptibilities  # noqa: E402
from patterning_core.model.adapters.spec import load_adapter  # noqa: E402
from patterning_core.model.adapters.tl import (  # noqa: E402
    TransformerLensModel,
    hooked_transformer_from_builtin,
    load_hooked_transformer,
)
from patterning_core.model.restricted_heads import (  # noqa: E402
    CachedLaneForward,
    HeadLaneForward,
    TransformerLoss,
)
from patterning_core.model.transformer import components, init_params, preset  # noqa: E402
from patterning_core.sampling.sgld import ConfigError, Run, SamplerConfig, _LaneLayout  # noqa: E402

CFG = preset("tiny")
SAMPLER = SamplerConfig(
    step_size=1e-4, n_beta=10.0, localization=100.0, num_chains=2, num_draws=6, batch_size=8
)
MLP_MODEL = {
    "n_layers": 2,
    "d_model": 16,
    "d_head": 8,
    "n_heads": 2,
    "n_ctx": 12,
    "d_vocab": 24,
    "d_mlp": 32,
    "act_fn": "gelu",
    "normalization_type": "LN",
    "seed": 3,
}
ATTN_ONLY = {**MLP_MODEL, "attn_only": True, "d_mlp": None}


def _perturbed(model) -> None:
    """Move every parameter off its initialization (biases and gains included)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _builtin_params() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double()
        for k, v in init_params(CFG, 1).items()
    }


def test_converted_builtin_model_gives_the_same_chi() -> None:
    params = _builtin_params()
    adapter = TransformerLensModel(hooked_transformer_from_builtin(params, CFG))
    assert list(adapter.components()) == list(components(CFG))
    data = torch.randint(
        0, CFG.d_vocab, (48, CFG.n_ctx), generator=torch.Generator().manual_seed(3)
    )
    got_loss = adapter(adapter.params(), (data[:4],))
    want_loss = TransformerLoss(CFG)(params, (data[:4],))
    assert float((got_loss - want_loss).abs().max()) < 1e-13
    probes = data[:2]
    want = estimate_susceptibilities(
        TransformerLoss(CFG), params, data, probes, components(CFG), SAMPLER
    )
    got = estimate_susceptibilities(
        adapter, adapter.params(), data, probes, adapter.components(), SAMPLER
    )
    assert list(got.component.values) == list(want.component.values)
    scale = float(abs(want).max())
    assert scale > 0
    assert float(abs(got - want).max()) < 1e-9 * scale
    other = estimate_susceptibilities(
        adapter, adapter.params(), data, probes, adapter.components(), SAMPLER.replace(seed=1)
    )
    assert float(abs(other - want).max()) > 1e-2 * scale  # the tolerance discriminates


def _reference(adapter: TransformerLensModel, views, tokens, chain_of_lane) -> torch.Tensor:
    """Lane by lane, the model's own ``forward`` (TransformerLens's loss) at each lane."""
    w_star = adapter.params()
    lanes = next(iter(views.values())).shape[0]
    out = []
    for lane in range(lanes):
        params = {**w_star, **{k: v[lane] for k, v in views.items()}}
        lane_tokens = tokens if chain_of_lane is None else tokens[chain_of_lane[lane]]
        out.append(adapter.loss(params, (lane_tokens,)))
    return torch.stack(out)


@pytest.mark.parametrize(
    ("spec", "dtype", "tol"),
    [(MLP_MODEL, "float64", 1e-10), (ATTN_ONLY, "float64", 1e-10), (ATTN_ONLY, "float32", 1e-4)],
    ids=["mlp-float64", "attn-only-float64", "attn-only-float32"],
)
def test_fast_path_equals_the_models_own_forward(spec, dtype, tol) -> None:
    model = load_hooked_transformer(spec, dtype=getattr(torch, dtype))
    _perturbed(model)
    adapter = TransformerLensModel(model)
    assert adapter.standard, adapter.why_slow
    params, comps, chains = adapter.params(), adapter.components(), 2
    heads = [[f"L{layer}H{h}" for h in range(2)] for layer in range(2)]
    groups = [*heads, ["embed"], ["unembed"], ["L0H0", "L1H1"]]
    if not spec.get("attn_only"):
        groups += [["L0MLP"], ["L1MLP"]]
    gen = torch.Generator().manual_seed(2)
    for group in groups:
        runs = [Run(n, comps[n]) for n in group]
        forward = adapter.lane_forward(params, runs, chains)
        head_group = group in heads
        assert isinstance(forward, HeadLaneForward if head_group else CachedLaneForward)
        layout = _LaneLayout(params, runs, chains)
        noise = torch.randn(layout.lanes, layout.numel, generator=gen, dtype=layout.w_star.dtype)
        flat = (layout.w_star + 0.05 * noise * layout.mask).requires_grad_()
        tokens = torch.randint(0, spec["d_vocab"], (chains, 3, spec["n_ctx"]), generator=gen)
        chain_of_lane = torch.arange(layout.lanes) % chains
        for batch, lanes in (((tokens,), chain_of_lane), ((tokens[0],), None)):
            got = forward(layout.views(flat), batch, lanes)
            want = _reference(adapter, layout.views(flat), batch[0], lanes)
            torch.testing.assert_close(got, want, atol=tol, rtol=0)
            (g_got,) = torch.autograd.grad(got.sum(), flat)
            (g_want,) = torch.autograd.grad(want.sum(), flat)
            # Off the runs' masks (the other heads of a mixed group) the sampler drops the
            # gradient; on them it must agree.
            mask = layout.mask
            torch.testing.assert_close(g_got * mask, g_want * mask, atol=tol * 10, rtol=0)


def test_sites_of_a_model_with_mlps() -> None:
    adapter = TransformerLensModel(load_hooked_transformer(MLP_MODEL))
    assert adapter.site_of("embed.W_E") == -1
    assert adapter.site_of("blocks.1.attn.W_Q") == 2
    assert adapter.site_of("blocks.1.mlp.W_in") == 3
    assert adapter.site_of("unembed.W_U") == 4
    comps = adapter.components()
    assert list(comps) == ["L0H0", "L0H1", "L1H0", "L1H1", "L0MLP", "L1MLP", "embed", "unembed"]
    assert set(comps["L1MLP"]) == {f"blocks.1.mlp.{n}" for n in ("W_in", "b_in", "W_out", "b_out")}
    assert not bool(comps["L0H1"]["blocks.0.attn.W_Q"][0].any())
    assert bool(comps["L0H1"]["blocks.0.attn.W_Q"][1].all())


def test_a_hooked_transformer_through_the_api(tmp_path) -> None:
    """Spec → adapter → χ: a tiny model with MLPs from a config and a local state dict."""
    model = load_hooked_transformer(MLP_MODEL)
    _perturbed(model)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    adapter = load_adapter(
        {"kind": "transformer_lens", "config": MLP_MODEL, "checkpoint": str(path)}
    )
    for name, value in model.named_parameters():
        assert torch.equal(adapter.params()[name], value.detach())
    data = torch.randint(0, 24, (32, 12), generator=torch.Generator().manual_seed(4))
    adapter.check(data)
    chi = estimate_susceptibilities(
        adapter, adapter.params(), data, data[:2], adapter.components(), SAMPLER
    )
    assert chi.dims == ("component", "unit")
    assert list(chi.component.values) == list(adapter.components())
    assert chi.shape == (8, 2 * 11)
    assert bool(torch.isfinite(torch.as_tensor(chi.values)).all())


def test_a_non_standard_model_runs_its_own_forward() -> None:
    spec = {**ATTN_ONLY, "positional_embedding_type": "rotary", "rotary_dim": 8}
    adapter = TransformerLensModel(load_hooked_transformer(spec, dtype=torch.float64))
    assert not adapter.standard and "positional_embedding_type" in adapter.why_slow
    comps, params = adapter.components(), adapter.params()
    assert "embed" in comps and set(comps["embed"]) == {"embed.W_E"}  # no learned positions
    runs = [Run("L1H0", comps["L1H0"])]
    forward = adapter.lane_forward(params, runs, 1)
    assert isinstance(forward, CachedLaneForward) and forward.site == -1
    layout = _LaneLayout(params, runs, 1)
    tokens = torch.randint(0, 24, (3, 12), generator=torch.Generator().manual_seed(6))
    got = forward(layout.views(layout.w_star[None]), (tokens,), None)
    torch.testing.assert_close(got[0], adapter.loss(params, (tokens,)), atol=0, rtol=0)


def test_bad_transformer_lens_inputs_name_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"takes a transformer_lens\.HookedTransformer"):
        TransformerLensModel(torch.nn.Linear(2, 2))
    model = load_hooked_transformer(ATTN_ONLY)
    with pytest.raises(ConfigError, match=r"HookedTransformerConfig\(dtype=\.\.\.\)"):
        TransformerLensModel(_cast(model))
    with pytest.raises(ConfigError, match="would fetch from the network"):
        load_hooked_transformer({**ATTN_ONLY, "tokenizer_name": "gpt2"})
    small = {**ATTN_ONLY, "d_model": 8}
    path = tmp_path / "small.safetensors"
    save_file(dict(load_hooked_transformer(small).state_dict()), str(path))
    with pytest.raises(ConfigError, match=r"other shapes \['embed.W_E \(24, 8\)"):
        load_hooked_transformer(ATTN_ONLY, path)
    pickle_path = tmp_path / "model.pt"
    pickle_path.write_bytes(b"not read")
    with pytest.raises(ConfigError, match="safetensors files only"):
        load_hooked_transformer(ATTN_ONLY, pickle_path)


def _cast(model):
    """The parameters in float64 while the config still says float32."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.double()
    return model
