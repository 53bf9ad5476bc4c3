"""Model adapters without TransformerLens: the built-in adapter, any nn.Module, model specs.

Tolerances: the module adapter and a hand-written ``loss_fn`` of the same function run the
same vmapped float64 arithmetic through different call paths (``functional_call`` vs direct
ops); per-draw losses agree to ~1e-16 relative, and χ (a covariance over 6 draws × 2
chains of contracting SGLD) to ~1e-13 relative; 1e-10 relative leaves a wide margin while a
different seed moves χ by O(1) (checked).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.model.adapters.base import masks_from_patterns
from patterning_core.model.adapters.builtin import BuiltinTransformer
from patterning_core.model.adapters.module import ModuleAdapter
from patterning_core.model.adapters.spec import check_model_spec, load_adapter, select_components
from patterning_core.model.checkpoints import save_checkpoint
from patterning_core.model.restricted_heads import CachedLaneForward, TransformerLoss
from patterning_core.model.transformer import components, init_params, preset
from patterning_core.sampling.sgld import ConfigError, Run, SamplerConfig

CFG = preset("tiny")
SAMPLER = SamplerConfig(
    step_size=1e-4, n_beta=10.0, localization=100.0, num_chains=2, num_draws=6, batch_size=8
)


def _classifier() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=gen)
    return net, (x, y)


def _unit_loss(forward, batch):
    x, y = batch
    return F.cross_entropy(forward(x), y, reduction="none")


def test_module_adapter_chi_equals_a_hand_written_loss_fn() -> None:
    net, data = _classifier()
    adapter = ModuleAdapter(net, _unit_loss, {"hidden": "0.*", "readout": ["2.weight", "2.bias"]})
    assert list(adapter.components()) == ["hidden", "readout"]
    assert set(adapter.components()["hidden"]) == {"0.weight", "0.bias"}
    adapter.check(data)

    def loss_fn(params, batch):
        x, y = batch
        h = torch.tanh(x @ params["0.weight"].T + params["0.bias"])
        return F.cross_entropy(h @ params["2.weight"].T + params["2.bias"], y, reduction="none")

    probes = tuple(t[:5] for t in data)
    chi = estimate_susceptibilities(
        adapter, adapter.params(), data, probes, adapter.components(), SAMPLER
    )
    want = estimate_susceptibilities(
        loss_fn, adapter.params(), data, probes, adapter.components(), SAMPLER
    )
    assert chi.shape == (2, 5)
    scale = float(abs(want).max())
    assert scale > 0
    assert float(abs(chi - want).max()) < 1e-10 * scale
    other = estimate_susceptibilities(
        loss_fn, adapter.params(), data, probes, adapter.components(), SAMPLER.replace(seed=1)
    )
    assert float(abs(other - want).max()) > 1e-2 * scale  # the tolerance discriminates


def test_a_pattern_matching_no_parameter_is_named() -> None:
    net, _ = _classifier()
    with pytest.raises(ConfigError, match=r"'attn\.\*' matches no parameter.*0\.weight"):
        ModuleAdapter(net, _unit_loss, {"hidden": "0.*", "heads": "attn.*"})
    with pytest.raises(ConfigError, match="components is empty"):
        masks_from_patterns(dict(net.named_parameters()), {})


def test_a_loss_of_the_wrong_shape_is_refused_before_sampling() -> None:
    net, data = _classifier()
    mean_loss = ModuleAdapter(
        net, lambda f, b: F.cross_entropy(f(b[0]), b[1]), {"all": "*"}
    )  # reduced to a scalar: not per unit
    with pytest.raises(ConfigError, match=r"per-unit losses of shape \[B\].*reduction='none'"):
        mean_loss.check(data)
    calls = []

    def counted(f, b):
        calls.append(1)
        return F.cross_entropy(f(b[0]), b[1])

    adapter = ModuleAdapter(net, counted, {"all": "*"})
    with pytest.raises(ConfigError, match="per-unit losses"):
        estimate_susceptibilities(
            adapter, adapter.params(), data, data, adapter.components(), SAMPLER
        )
    assert len(calls) == 1  # refused at the first evaluation, before any SGLD step


def test_builtin_adapter_is_the_transformer_loss() -> None:
    """The built-in adapter gives χ bit for bit equal to ``TransformerLoss`` (same code)."""
    params = init_params(CFG, 1)
    adapter = BuiltinTransformer(CFG, params)
    assert list(adapter.components()) == list(components(CFG))
    data = torch.randint(0, CFG.d_vocab, (32, CFG.n_ctx), generator=torch.Generator())
    comps = select_components(adapter.components(), ["L1H0", "unembed"])
    a = estimate_susceptibilities(adapter, adapter.params(), data, data[:1], comps, SAMPLER)
    b = estimate_susceptibilities(TransformerLoss(CFG), params, data, data[:1], comps, SAMPLER)
    assert bool((a == b).all())
    # The unembedding's run starts from the cached residual entering the readout.
    forward = adapter.lane_forward(params, [Run("unembed", comps["unembed"])], 2)
    assert isinstance(forward, CachedLaneForward) and forward.site == 2 * CFG.n_layers


def test_load_adapter_builtin_from_a_checkpoint(tmp_path) -> None:
    params = init_params(CFG, 2)
    path = save_checkpoint(tmp_path / "step_00000010.safetensors", params, CFG, 10, 0)
    adapter = load_adapter({"kind": "builtin", "checkpoint": str(path)})
    assert isinstance(adapter, BuiltinTransformer)
    for name, value in params.items():
        assert torch.equal(adapter.params()[name], value)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"kind": "keras"}, ConfigError, r"unknown model kind 'keras'; the kinds are"),
        ({"checkpoint": "x"}, ConfigError, r"unknown model kind None"),
        ({"kind": "builtin"}, ConfigError, r"'builtin' model spec needs \['checkpoint'\]"),
        (
            {"kind": "builtin", "checkpoint": "/nonexistent/step_1.safetensors"},
            FileNotFoundError,
            r"/nonexistent/step_1.safetensors does not exist",
        ),
        (
            {"kind": "transformer_lens", "config": {}, "checkpoint": "/nonexistent/m.safetensors"},
            FileNotFoundError,
            r"does not exist \(spec kind 'transformer_lens'\)",
        ),
        (
            {"kind": "transformer_lens", "config": {}, "dtype": "float16"},
            ConfigError,
            r"dtype must be one of",
        ),
        (
            {"kind": "builtin", "checkpoint": "x", "layers": 2},
            ConfigError,
            r"unknown key\(s\) \['layers'\]",
        ),
    ],
)
def test_bad_model_specs_name_the_fix(spec, error, match) -> None:
    with pytest.raises(error, match=match):
        check_model_spec(spec)
    with pytest.raises(error, match=match):
        load_adapter(spec)


def test_unknown_component_names_are_listed() -> None:
    with pytest.raises(ConfigError, match=r"unknown component\(s\) \['L9H9'\].*'L0H0'"):
        select_components(components(CFG), ["L0H0", "L9H9"])
