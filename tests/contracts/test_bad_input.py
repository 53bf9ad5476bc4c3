"""Bad input is a clear error naming the problem and the fix, before anything is written.

Through the ``patterning run`` command the configuration is checked before a Prefect
server starts (``prefect_api`` is replaced by a trap here) and before any folder, run
directory, cache or χ store is created (``$PATTERNING_HOME`` is a fresh folder that must
stay absent).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from flows.cli import main
from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.estimators.susceptibility import sample_susceptibility_stats
from patterning_core.model.checkpoints import checkpoint_path, save_checkpoint
from patterning_core.model.transformer import PRESETS, init_params, preset
from patterning_core.sampling.sgld import ConfigError, SamplerConfig
from patterning_core.store.chi_store import (
    StoreError,
    assemble_chi,
    completed,
    create_store,
    open_chi,
    store_summary,
    write_shard,
)
from patterning_core.store.workloads import build_workload

SAMPLER = SamplerConfig(
    step_size=1e-4, n_beta=20.0, localization=100.0, num_chains=2, num_draws=5, batch_size=8
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, not yet existing ``$PATTERNING_HOME``, and no Prefect server allowed."""
    import flows.server

    path = tmp_path / "home"
    monkeypatch.setenv("PATTERNING_HOME", str(path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def no_server():
        raise AssertionError("a Prefect server was started before the config was checked")

    monkeypatch.setattr(flows.server, "prefect_api", no_server)
    return path


def run_cli(tmp_path: Path, flow: str, config: dict, capsys) -> tuple[int, str]:
    path = tmp_path / f"{flow}.json"
    path.write_text(json.dumps(config))
    code = main(["run", flow, "--config", str(path)])
    return code, capsys.readouterr().err


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A checkpoint of the ``tiny`` preset: context 32, vocabulary 64."""
    cfg = preset("tiny")
    return save_checkpoint(checkpoint_path(tmp_path / "run", 0), init_params(cfg), cfg, 0, 0)


def text_free_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "no-text"
    folder.mkdir()
    (folder / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (folder / "empty.txt").write_text("")
    return folder


# ----------------------------------------------------------------------------- the command


VALID_PRESETS = ", ".join(sorted(PRESETS))


@pytest.mark.parametrize(
    ("flow", "config", "message"),
    [
        (
            "pipeline",
            {"preset": "nope"},
            rf"unknown transformer preset 'nope'; valid presets: {VALID_PRESETS}\. Set `preset`",
        ),
        (
            "train",
            {"preset": "nope", "train": {"steps": 5}},
            rf"unknown transformer preset 'nope'; valid presets: {VALID_PRESETS}",
        ),
        (
            "pipeline",
            {"preset": "tiny", "data": {"source": "synthetic", "preset": "bench"}},
            r"synthetic preset 'bench' makes sequences of 64 tokens, longer than the model's "
            r"context \(n_ctx=32\).*use data preset 'tiny'",
        ),
        (
            "pipeline",
            {"preset": "tiny", "data": {"source": "corpus"}},
            r"at least 257 tokens, the model has d_vocab=64: use a model preset",
        ),
        (
            "pipeline",
            {
                "preset": "tiny",
                "data": {"source": "synthetic", "preset": "tiny"},
                "train": {"steps": 40, "checkpoint_steps": [0, 20, 40]},
                "chi_checkpoints": [20, 30],
            },
            r"no checkpoint at steps \[30\] \(it saves \[0, 20, 40\]\); pick steps",
        ),
        (
            "pipeline",
            {"presett": "demo"},
            r"unknown parameter 'presett'; the parameters are .*'preset'",
        ),
        (
            "pipeline",
            {
                "preset": "tiny",
                "data": {"source": "synthetic", "preset": "tiny"},
                "train": {"steps": 40},
                "chi_checkpoints": 2,
                "sampler": {"step_size": -1.0},
            },
            r"step_size must be a finite number > 0",
        ),
    ],
    ids=[
        "unknown-preset",
        "train-unknown-preset",
        "longer-than-context",
        "vocab",
        "steps",
        "key",
        "sampler",
    ],
)
def test_bad_flow_config_exits_2_before_anything_starts(
    tmp_path, home, capsys, flow, config, message
):
    out = tmp_path / "out"
    config = {**config, "out_dir": str(out)} if flow == "pipeline" else config
    code, err = run_cli(tmp_path, flow, config, capsys)
    assert code == 2
    assert err.startswith("patterning: error: ")
    assert re.search(message, err), err
    assert not out.exists() and not home.exists()


@pytest.mark.parametrize("case", ["missing", "no-text"])
def test_bad_corpus_paths_exit_2_before_anything_starts(tmp_path, home, capsys, case):
    folder = tmp_path / "nowhere" if case == "missing" else text_free_folder(tmp_path)
    data = {"source": "corpus", "paths": [str(folder)]}
    for flow, config in (
        ("train", {"preset": "bench", "data": data, "train": {"steps": 5}}),
        ("pipeline", {"preset": "bench", "data": data, "out_dir": str(tmp_path / "out")}),
    ):
        code, err = run_cli(tmp_path, flow, config, capsys)
        assert code == 2, err
        if case == "missing":
            assert f"data.paths: corpus path {folder} does not exist; pass existing text" in err
        else:
            assert "data.paths: no UTF-8 text found in" in err
            assert "2 empty, binary or non-UTF-8 files skipped" in err
    assert not (tmp_path / "out").exists() and not home.exists()


def test_workload_longer_than_the_checkpoints_context_exits_2(
    tmp_path, home, capsys, tiny_checkpoint
):
    """χ of a ``tiny`` checkpoint (context 32) on 64-token probes: refused, no store."""
    store = tmp_path / "chi.zarr"
    workload = {"kind": "transformer", "data": {"source": "synthetic", "preset": "bench"}}
    config = {
        "store": str(store),
        "workload": workload,
        "checkpoints": [{"step": 0, "path": str(tiny_checkpoint)}],
        "sampler": SAMPLER.to_dict(),
    }
    code, err = run_cli(tmp_path, "susceptibilities", config, capsys)
    assert code == 2
    assert "sequences of 64 tokens, longer than the model's context (n_ctx=32)" in err
    assert not store.exists() and not home.exists()
    # The workload itself refuses too (what every shard task rebuilds).
    with pytest.raises(ConfigError, match=r"longer than the model's context \(n_ctx=32\)"):
        build_workload(workload, tiny_checkpoint)
    # Control: the same checkpoint with data of its own context is accepted.
    ok = {**workload, "data": {"source": "synthetic", "preset": "tiny", "n_seqs": 64}}
    probes = build_workload({**ok, "sgld_seqs": 8, "probe_seqs": 1}, tiny_checkpoint).probes[0]
    assert probes.shape == (1, 32) and bool(torch.all(probes < 64))
    missing = {**config, "checkpoints": [{"step": 0, "path": str(tmp_path / "gone.safetensors")}]}
    code, err = run_cli(tmp_path, "susceptibilities", missing, capsys)
    assert code == 2 and "gone.safetensors (step 0) does not exist" in err
    assert not store.exists()


# ----------------------------------------------------------------------------- library


def test_bad_corpus_paths_through_lm_data_write_no_cache(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PATTERNING_HOME", str(home))
    bench = preset("bench")
    with pytest.raises(ConfigError, match=r"data.paths: corpus path .*nowhere does not exist"):
        load_lm_tokens({"source": "corpus", "paths": [str(tmp_path / "nowhere")]}, bench)
    folder = text_free_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"data.paths: no UTF-8 text found in .*no-text"):
        load_lm_tokens({"source": "corpus", "paths": str(folder)}, bench)
    with pytest.raises(ConfigError, match=r"unknown data source 'web'; use 'synthetic' or"):
        load_lm_tokens({"source": "web"}, bench)
    assert not home.exists()  # no tokenizer or token-stream cache was written


def test_store_with_another_schema_version_is_refused_and_left_unchanged(tmp_path, capsys):
    work = build_workload({"kind": "toy-mlp", "n": 64, "d_in": 3, "hidden": 4, "probes": 3})
    path = tmp_path / "chi.zarr"
    layout = dict(
        checkpoints=[0],
        components=list(work.components),
        num_chains=2,
        num_draws=SAMPLER.num_draws,
        unit_coords=work.unit_coords,
        attrs={"sampler_config": SAMPLER.to_json(), "code_version": "patterning 9.9"},
    )
    create_store(path, **layout)
    stats = sample_susceptibility_stats(
        work.loss_fn, work.params, work.data, work.probes, work.components, SAMPLER
    )
    zarr.open_group(str(path), mode="r+", zarr_format=3).attrs["schema_version"] = 99
    before = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

    refused = r"schema version 99; this code reads and writes version 1\. Write the run to a new"
    for attempt in (
        lambda: open_chi(path),
        lambda: store_summary(path),
        lambda: completed(path, 0),
        lambda: write_shard(path, 0, stats),
        lambda: assemble_chi(path, 0),
        lambda: create_store(path, **layout),
    ):
        with pytest.raises(StoreError, match=refused + r".*\(patterning 9\.9\)"):
            attempt()
    assert main(["chi", "show", str(path)]) == 2
    assert "schema version 99" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    assert after == before  # nothing written, nothing replaced
    assert not list(tmp_path.glob(".chi.zarr.creating-*"))
    assert np.all(np.asarray(zarr.open_group(str(path), mode="r")["shard_done"][:]) == 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--chi-step", "1100"], r"chi_step 1100 is not a checkpoint of the recipe .*pick"),
        (["--alpha", "-1"], r"alpha must be a number >= 0"),
        (["--eval-seqs", "0"], r"eval_seqs = 0: Input should be greater than or equal to 1"),
        (["--preset", "tiny"], r"at least 257 tokens, the model has d_vocab=64"),
    ],
    ids=["chi-step", "alpha", "eval-seqs", "vocab"],
)
def test_bad_spacing_arguments_exit_2_before_anything_starts(home, capsys, argv, message):
    code = main(["spacing", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("patterning: error: ")
    assert re.search(message, err), err
    assert not home.exists()


# ----------------------------------------------------------------------------- model specs


def _module_model(tmp_path: Path, **change) -> dict:
    """A ``module`` model spec (``tests/module_models.py``) with one checkpoint and data."""
    from safetensors.torch import save_file

    from tests.module_models import build_classifier

    folder = tmp_path / "checkpoints"
    folder.mkdir(exist_ok=True)
    state = build_classifier().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "step_3.safetensors"))
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    data = tmp_path / "data.safetensors"
    save_file(
        {"train.0": x, "train.1": y, "probes.0": x[:2].clone(), "probes.1": y[:2].clone()},
        str(data),
    )
    return {
        "kind": "module",
        "factory": "tests.module_models:build_classifier",
        "loss": "tests.module_models:unit_loss",
        "components": {"hidden": ["0.*"], "readout": ["2.*"]},
        "checkpoint_dir": str(folder),
        "data_file": str(data),
        **change,
    }


@pytest.mark.parametrize(
    ("flow", "change", "extra", "message"),
    [
        (
            "susceptibilities",
            {"factory": "my_models.nets:build"},
            {},
            r"model.factory 'my_models.nets:build': module 'my_models.nets' does not import "
            r"\(ModuleNotFoundError.*add its folder to PYTHONPATH",
        ),
        (
            "susceptibilities",
            {"components": {"hidden": ["0.*"], "attn": ["blocks.*"]}},
            {},
            r"component 'attn': pattern 'blocks.\*' matches no parameter; the parameters are",
        ),
        (
            "susceptibilities",
            {"loss": "tests.module_models:mean_loss"},
            {},
            r"per-unit losses of shape \[B\]",
        ),
        (
            "susceptibilities",
            {"components": ["hidden"]},
            {},
            r"components of a 'module' model: \{name: \[parameter-name patterns\]\}",
        ),
        (
            "pipeline",
            {},
            {"train": {"steps": 10}},
            r"\['train'\]: the pipeline trains nothing when given a model",
        ),
        (
            "pipeline",
            {},
            {"chi_checkpoints": [7]},
            r"the model has no checkpoint at steps \[7\] \(it has \[3\]\)",
        ),
    ],
    ids=["import", "pattern", "loss-shape", "components", "pipeline-train", "pipeline-steps"],
)
def test_bad_model_specs_exit_2_before_anything_starts(
    tmp_path, home, capsys, flow, change, extra, message
):
    out = tmp_path / "out"
    config = {"model": _module_model(tmp_path, **change), "sampler": SAMPLER.to_dict(), **extra}
    config.update({"store": str(out / "chi.zarr")} if flow == "susceptibilities" else {})
    config.update({"out_dir": str(out)} if flow == "pipeline" else {})
    code, err = run_cli(tmp_path, flow, config, capsys)
    assert code == 2
    assert re.search(message, err), err
    assert not out.exists() and not home.exists()


def test_a_transformer_lens_vocabulary_other_than_the_tokenizers_exits_2(tmp_path, home, capsys):
    """Corpus settings for a HookedTransformer whose d_vocab is not the tokenizer's size:
    refused before any server or store, naming the fixes (the tokenizer is cached)."""
    pytest.importorskip("transformer_lens")
    from tests.core.test_model_specs import TEXT, TL

    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.py").write_text(TEXT)
    config = {**TL, "d_vocab": 300, "act_fn": "gelu"}
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    from safetensors.torch import save_file

    from patterning_core.model.adapters.tl import load_hooked_transformer

    state = load_hooked_transformer(config).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "step_1.safetensors"))
    model = {
        "kind": "transformer_lens",
        "config": config,
        "checkpoint_dir": str(folder),
        "data": {"source": "corpus", "paths": [str(tmp_path / "text")]},
    }
    store = tmp_path / "out" / "chi.zarr"
    params = {"store": str(store), "model": model, "sampler": SAMPLER.to_dict()}
    code, err = run_cli(tmp_path, "susceptibilities", params, capsys)
    assert code == 2
    assert re.search(r"tokenizer has 297 tokens but the model's d_vocab is 300.*d_vocab = 297", err)
    assert not store.parent.exists()
