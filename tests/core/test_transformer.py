"""Attention-only transformer: shapes, known answers, vmap safety, components."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from patterning_core.model.transformer import (
    PRESETS,
    AttnOnlyTransformer,
    TransformerConfig,
    attention_patterns,
    components,
    embed,
    forward,
    forward_from,
    init_params,
    loss_per_token,
    make_loss_fn,
    param_shapes,
    preset,
    residual_before,
)

CFG = TransformerConfig(n_layers=2, n_heads=3, d_model=12, d_head=4, n_ctx=10, d_vocab=17)


def _tokens(B: int = 4, T: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _random_params(seed: int = 0) -> dict[str, torch.Tensor]:
    # Larger-than-init weights so that every path matters in the comparisons below.
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in init_params(CFG).items()}


def test_param_names_and_head_major_shapes() -> None:
    shapes = param_shapes(CFG)
    assert shapes["embed.W_E"] == (17, 12)
    assert shapes["pos.W_pos"] == (10, 12)
    assert shapes["blocks.1.attn.W_Q"] == (3, 12, 4)
    assert shapes["blocks.1.attn.W_O"] == (3, 4, 12)
    assert shapes["blocks.0.attn.b_V"] == (3, 4)
    assert shapes["blocks.0.attn.b_O"] == (12,)
    assert shapes["unembed.W_U"] == (12, 17)
    assert shapes["unembed.b_U"] == (17,)
    model = AttnOnlyTransformer(CFG)
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == shapes


def test_presets() -> None:
    assert PRESETS["bench"] == TransformerConfig(
        n_layers=2, n_heads=8, d_model=64, d_head=8, n_ctx=64, d_vocab=512
    )
    paper = preset("paper")
    assert (paper.n_layers, paper.n_heads, paper.d_model, paper.d_head) == (2, 8, 256, 32)
    assert (paper.n_ctx, paper.d_vocab) == (1024, 5000)
    assert 3.0e6 < paper.n_params() < 3.5e6  # "the 3M-parameter model"
    long = preset("demo_long")  # the demo with four times its context
    assert long == dataclasses.replace(preset("demo"), n_ctx=256)
    wide = preset("induce_wide")  # the demo's shape with heads twice as wide
    assert wide == dataclasses.replace(preset("demo"), d_model=128, d_head=16)
    assert preset("fin_wide") == dataclasses.replace(wide, n_ctx=256)  # demo_long, wide heads
    assert preset("fin_deep") == dataclasses.replace(long, n_layers=4)  # demo_long, 4 layers
    assert preset("induce_paper_heads").d_head == paper.d_head
    with pytest.raises(
        ValueError,
        match="bench, demo, demo_long, fin_deep, fin_wide, induce_paper_heads, induce_wide, "
        "paper, tiny",
    ):
        preset("huge")


def test_config_roundtrip_and_validation() -> None:
    assert TransformerConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown TransformerConfig keys"):
        TransformerConfig.from_dict({**CFG.to_dict(), "d_mlp": 4})
    with pytest.raises(ValueError, match="n_heads"):
        TransformerConfig(n_layers=1, n_heads=0, d_model=4, d_head=2, n_ctx=4, d_vocab=5)


def test_init_is_deterministic_and_loss_starts_near_log_vocab() -> None:
    a, b, c = init_params(CFG, 1), init_params(CFG, 1), init_params(CFG, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.W_E"], c["embed.W_E"])
    loss = make_loss_fn(CFG)(a, (_tokens(),))
    assert loss.shape == (4, 9)
    # N(0, (0.8/sqrt(d_model))^2) weights: logits of order 1, loss within ~0.5 of log(V).
    assert abs(loss.mean().item() - math.log(CFG.d_vocab)) < 0.5


def test_loss_is_next_token_cross_entropy() -> None:
    params, tokens = _random_params(), _tokens()
    logits = forward(params, tokens, CFG)
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, CFG.d_vocab), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(4, 9)
    torch.testing.assert_close(make_loss_fn(CFG)(params, (tokens,)), expected)


def test_fused_loss_equals_reference_in_value_and_gradient() -> None:
    # float64, so that the two paths differ only by rounding (~1e-16 relative): the default
    # float64 tolerances of assert_close (rtol 1e-7) leave eight orders of magnitude of room
    # and still catch any real difference (a missing 1/sqrt(d) scale, a shifted target).
    params = {k: v.double().requires_grad_() for k, v in _random_params().items()}
    tokens = _tokens()
    ref = loss_per_token(params, tokens, CFG)
    fused = loss_per_token(params, tokens, CFG, fused=True)
    torch.testing.assert_close(fused, ref)
    weights = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    grads_ref = torch.autograd.grad((weights * ref).sum(), list(params.values()))
    grads_fused = torch.autograd.grad((weights * fused).sum(), list(params.values()))
    for name, a, b in zip(params, grads_fused, grads_ref, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_module_matches_functional() -> None:
    model = AttnOnlyTransformer(CFG)
    params = _random_params()
    model.load_params(params)
    tokens = _tokens()
    torch.testing.assert_close(model(tokens), forward(params, tokens, CFG))
    torch.testing.assert_close(model.loss(tokens), make_loss_fn(CFG)(params, (tokens,)))


def test_causality() -> None:
    params, tokens = _random_params(), _tokens()
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % CFG.d_vocab
    loss_fn = make_loss_fn(CFG)
    a, b = loss_fn(params, (tokens,)), loss_fn(params, (changed,))
    # unit t predicts token t+1 from tokens[:t+1]: units 0..4 never see position 6.
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 5] != b[:, 5]).all()  # unit 5 predicts the changed token


def test_uniform_attention_known_answer() -> None:
    params = _random_params()
    for layer in range(CFG.n_layers):
        for m in "QK":
            params[f"blocks.{layer}.attn.W_{m}"] = torch.zeros(3, 12, 4)
            params[f"blocks.{layer}.attn.b_{m}"] = torch.zeros(3, 4)
    expected = torch.tril(torch.ones(10, 10)) / torch.arange(1, 11)[:, None]
    for pattern in attention_patterns(params, _tokens(), CFG):
        assert pattern.shape == (4, 3, 10, 10)
        torch.testing.assert_close(pattern, expected.expand(4, 3, 10, 10))


def test_forward_from_cached_residual() -> None:
    params, tokens = _random_params(), _tokens()
    resid1 = residual_before(params, tokens, 1, CFG)
    torch.testing.assert_close(forward_from(params, resid1, 1, CFG), forward(params, tokens, CFG))
    torch.testing.assert_close(residual_before(params, tokens, 0, CFG), embed(params, tokens))


@pytest.mark.parametrize("batch_dim", [None, 0])
def test_vmap_over_stacked_params_equals_separate_calls(batch_dim: int | None) -> None:
    base, tokens = _random_params(), _tokens()
    loss_fn = make_loss_fn(CFG)
    moving = [k for k in base if k.startswith("blocks.1.") or k == "embed.W_E"]
    copies = [_random_params(seed) for seed in (1, 2, 3)]
    stacked = {
        k: torch.stack([c[k] for c in copies]) if k in moving else v for k, v in base.items()
    }
    in_dims = {k: 0 if k in moving else None for k in base}
    batch = (
        (torch.stack([tokens, _tokens(seed=5), _tokens(seed=6)]),) if batch_dim == 0 else (tokens,)
    )
    out = torch.func.vmap(loss_fn, in_dims=(in_dims, batch_dim))(stacked, batch)
    for i, c in enumerate(copies):
        params = {k: (c[k] if k in moving else v) for k, v in base.items()}
        tok = batch[0][i] if batch_dim == 0 else tokens
        torch.testing.assert_close(out[i], loss_fn(params, (tok,)), rtol=1e-5, atol=1e-5)


def test_vmap_of_grad() -> None:
    base, tokens = _random_params(), _tokens()
    loss_fn = make_loss_fn(CFG)
    stacked = {k: torch.stack([v, v * 0.9, v * 1.1]) for k, v in base.items()}

    def mean_loss(p, b):
        return loss_fn(p, b).mean()

    grads = torch.func.vmap(torch.func.grad(mean_loss), in_dims=(0, None))(stacked, (tokens,))
    single = torch.func.grad(mean_loss)({k: v[2] for k, v in stacked.items()}, (tokens,))
    for k in base:
        torch.testing.assert_close(grads[k][2], single[k], rtol=1e-4, atol=1e-5)


def test_components() -> None:
    comps = components(CFG)
    heads = [f"L{layer}H{h}" for layer in range(2) for h in range(3)]
    assert list(comps) == [*heads, "embed", "unembed"]
    shapes = param_shapes(CFG)
    for _name, masks in comps.items():
        for pname, mask in masks.items():
            assert mask.dtype == torch.bool and tuple(mask.shape) == shapes[pname]
    l1h2 = comps["L1H2"]
    assert sorted(l1h2) == sorted(
        f"blocks.1.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
    )
    for mask in l1h2.values():
        assert mask[2].all() and not mask[:2].any()
    # Heads of a layer partition the head weights; b_O and LayerNorm belong to no component.
    total = sum(comps[f"L0H{h}"]["blocks.0.attn.W_V"].int() for h in range(3))
    assert (total == 1).all()
    covered = {p for masks in comps.values() for p in masks}
    assert "blocks.0.attn.b_O" not in covered and "blocks.0.ln.w" not in covered
    assert sorted(comps["embed"]) == ["embed.W_E", "pos.W_pos"]
    assert sorted(comps["unembed"]) == ["unembed.W_U", "unembed.b_U"]
    model_comps = components(AttnOnlyTransformer(CFG))
    assert all(torch.equal(model_comps["L0H1"][k], v) for k, v in comps["L0H1"].items())


def test_restricted_head_cannot_change_layer0_output() -> None:
    params, tokens = _random_params(), _tokens()
    mask = components(CFG)["L1H0"]
    moved = {k: (v + 0.3 * mask[k] if k in mask else v) for k, v in params.items()}
    torch.testing.assert_close(
        residual_before(moved, tokens, 1, CFG), residual_before(params, tokens, 1, CFG)
    )
    assert not torch.allclose(forward(moved, tokens, CFG), forward(params, tokens, CFG))
