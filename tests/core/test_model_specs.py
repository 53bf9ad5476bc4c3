"""Model specs of every kind as workloads: a module by import strings, token models on
corpus settings, and moving a workload (the model's buffers with its parameters)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from patterning_core.model.adapters.spec import check_model_spec, import_object, load_adapter
from patterning_core.model.checkpoints import save_checkpoint
from patterning_core.model.transformer import init_params, preset
from patterning_core.sampling.sgld import ConfigError
from patterning_core.store.workloads import build_workload
from tests.module_models import build_classifier

MODULE = {
    "kind": "module",
    "factory": "tests.module_models:build_classifier",
    "loss": "tests.module_models:unit_loss",
    "components": {"hidden": "0.*", "readout": ["2.weight", "2.bias"]},
    "config": {"hidden": 8},
}
TEXT = "def alpha(x):\n    return alpha(x) + beta\n" * 40 + (
    "class Beta:\n    def gamma(self):\n        return self.gamma\n" * 40
)
TL = {"n_layers": 1, "n_heads": 2, "d_model": 8, "d_head": 4, "n_ctx": 12, "d_mlp": 16}


def _module_files(tmp_path):
    net = build_classifier(hidden=8, seed=1)
    ckpt = tmp_path / "step_00000005.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=gen), torch.randint(0, 4, (40,), generator=gen)
    data = tmp_path / "data.safetensors"
    save_file(
        {"train.0": x, "train.1": y, "probes.0": x[:6].clone(), "probes.1": y[:6].clone()},
        str(data),
    )
    return net, ckpt, data


def test_a_module_by_import_strings(tmp_path) -> None:
    net, ckpt, data = _module_files(tmp_path)
    adapter = load_adapter(MODULE, ckpt)
    for name, value in net.state_dict().items():  # the checkpoint's weights, not seed 0's
        assert torch.equal(adapter.params()[name], value)
    spec = {"kind": "model", "model": MODULE, "data_file": str(data), "probe_seqs": 5}
    work = build_workload(spec, ckpt)
    assert list(work.components) == ["hidden", "readout"]
    assert [t.shape[0] for t in work.data] == [40, 40] and work.probes[0].shape == (5, 3)
    assert list(work.unit_coords) == ["example"] and len(work.unit_coords["example"]) == 5
    work.loss_fn.check(work.probes)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"factory": "tests.module_models.build_classifier"}, r"import string 'package\.module"),
        ({"factory": "tests.no_such_module:build"}, r"module 'tests\.no_such_module' does not"),
        ({"loss": "tests.module_models:nope"}, r"has no attribute 'nope'"),
        ({"loss": "tests.module_models:MODULE_LIST"}, r"has no attribute"),
        ({"components": ["0.*"]}, r"components are \{name: parameter-name pattern"),
        ({"config": [1]}, r"factory's keyword arguments"),
    ],
)
def test_bad_module_specs_are_refused_without_weights(change, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_model_spec({**MODULE, **change})


def test_bad_modules_are_refused_when_built(tmp_path) -> None:
    _, ckpt, data = _module_files(tmp_path)
    cases = [
        ({"components": {"hidden": "0.*", "attn": "attn.*"}}, r"'attn\.\*' matches no parameter"),
        ({"factory": "tests.module_models:not_a_module"}, r"returned a dict, not a torch"),
        ({"config": {"width": 3}}, r"refused model\.config as keyword arguments"),
        ({"config": {"hidden": 6}}, r"does not fit the module model\.factory.*other shapes"),
    ]
    for change, match in cases:
        with pytest.raises(ConfigError, match=match):
            load_adapter({**MODULE, **change}, ckpt)
    wrong = {"kind": "model", "model": {**MODULE, "loss": "tests.module_models:mean_loss"}}
    with pytest.raises(ConfigError, match=r"per-unit losses"):
        build_workload({**wrong, "data_file": str(data)}, ckpt)  # labelling the units
    other = tmp_path / "float64.safetensors"  # float64 inputs to a float32 module
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.int64)
    batches = {"train.0": x, "train.1": y, "probes.0": x.clone(), "probes.1": y.clone()}
    save_file(batches, str(other))
    with pytest.raises(ConfigError, match=r"the loss fails on two rows.*dtypes and shapes"):
        build_workload({"kind": "model", "model": MODULE, "data_file": str(other)}, ckpt)
    assert import_object("tests.module_models:build_classifier") is build_classifier


def test_token_models_take_corpus_settings(tmp_path) -> None:
    """The built-in path's corpus settings for a TransformerLens model: units labelled as
    the built-in model's; a d_vocab other than the tokenizer's is refused, naming the fix."""
    pytest.importorskip("transformer_lens")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.py").write_text(TEXT)
    data = {"source": "corpus", "paths": [str(tmp_path / "text")]}
    model = {"kind": "transformer_lens", "config": {**TL, "d_vocab": 260, "act_fn": "gelu"}}
    spec = {"kind": "model", "model": model, "data": data, "sgld_seqs": 64, "probe_seqs": 2}
    work = build_workload(spec)
    assert work.data[0].shape == (64, 12) and work.probes[0].shape == (2, 12)
    assert {"token_text", "pattern_class", "position"} <= set(work.unit_coords)
    assert len(work.unit_coords["token_text"]) == 2 * 11
    work.loss_fn.check(work.probes)
    model["config"]["d_vocab"] = 300  # this corpus gives a tokenizer of 297 tokens
    with pytest.raises(ConfigError, match=r"tokenizer has 297 tokens but the model's d_vocab"):
        build_workload(spec)
    # The built-in model on the same settings: the "transformer" workload's data.
    cfg = preset("tiny")
    ckpt = save_checkpoint(tmp_path / "step_00000001.safetensors", init_params(cfg, 0), cfg, 1, 0)
    builtin = {
        **spec,
        "model": {"kind": "builtin"},
        "data": {"source": "synthetic", "preset": "tiny"},
    }
    builtin_work = build_workload(builtin, ckpt)
    reference = build_workload(
        {"kind": "transformer", "data": builtin["data"], "sgld_seqs": 64, "probe_seqs": 2}, ckpt
    )
    assert torch.equal(builtin_work.data[0], reference.data[0])
    assert torch.equal(builtin_work.probes[0], reference.probes[0])
    assert list(builtin_work.unit_coords) == list(reference.unit_coords)


def test_moving_a_transformer_lens_workload_moves_its_buffers(tmp_path) -> None:
    """Workload.to moves the HookedTransformer's buffers (attention masks, IGNORE) with
    its parameters: to float64 (checked on the CPU), and to the meta device, which stands
    in for an accelerator (every tensor must land there)."""
    pytest.importorskip("transformer_lens")
    tokens = tmp_path / "tokens.safetensors"
    ids = torch.randint(0, 24, (8, 12), generator=torch.Generator().manual_seed(0))
    save_file({"train": ids, "probes": ids[:2].clone()}, str(tokens))
    model = {"kind": "transformer_lens", "config": {**TL, "d_vocab": 24, "act_fn": "gelu"}}
    work = build_workload({"kind": "model", "model": model, "tokens": str(tokens)})
    hooked = work.loss_fn.model
    assert any(b.is_floating_point() for b in hooked.buffers())  # IGNORE: a float buffer
    wide = work.to(dtype=torch.float64)
    assert {t.dtype for t in [*hooked.parameters(), *wide.params.values()]} == {torch.float64}
    assert {b.dtype for b in hooked.buffers()} == {torch.bool, torch.float64}
    assert hooked.cfg.dtype == torch.float64 and wide.data[0].dtype == torch.int64
    assert wide.loss_fn(wide.params, wide.probes).dtype == torch.float64
    meta = wide.to("meta")
    tensors = [
        *hooked.parameters(),
        *hooked.buffers(),
        *meta.params.values(),
        *meta.data,
        *meta.probes,
        *(m for ms in meta.components.values() for m in ms.values()),
    ]
    assert {t.device.type for t in tensors} == {"meta"} and hooked.cfg.device == "meta"


def test_moving_a_module_workload_moves_its_buffers(tmp_path) -> None:
    ckpt = tmp_path / "step_00000001.safetensors"
    save_file(
        {k: v.contiguous() for k, v in load_adapter(_scaled()).module.state_dict().items()},
        str(ckpt),
    )
    data = tmp_path / "data.safetensors"
    save_file({"train": torch.randn(8, 3), "probes": torch.randn(2, 3)}, str(data))
    work = build_workload({"kind": "model", "model": _scaled(), "data_file": str(data)}, ckpt)
    module = work.loss_fn.module
    wide = work.to(dtype=torch.float64)
    assert module.scale.dtype == torch.float64 and module.count.dtype == torch.int64
    assert {t.dtype for t in [*wide.params.values(), *wide.data]} == {torch.float64}
    assert wide.loss_fn(wide.params, wide.probes).dtype == torch.float64
    meta = wide.to("meta")
    tensors = [*module.parameters(), *module.buffers(), *meta.params.values(), *meta.probes]
    assert {t.device.type for t in tensors} == {"meta"}


def _scaled() -> dict:
    return {
        "kind": "module",
        "factory": "tests.module_models:build_scaled",
        "loss": "tests.module_models:scaled_loss",
        "components": {"all": "lin.*"},
    }
