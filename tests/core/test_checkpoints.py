"""Checkpoints: safetensors round trip, metadata, digest, architecture mismatch."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from patterning_core.model.checkpoints import (
    checkpoint_digest,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from patterning_core.model.transformer import TransformerConfig, init_params

CFG = TransformerConfig(n_layers=2, n_heads=2, d_model=8, d_head=4, n_ctx=6, d_vocab=11)


def test_roundtrip_metadata_and_listing(tmp_path) -> None:
    params = init_params(CFG, seed=3)
    path = save_checkpoint(
        checkpoint_path(tmp_path, 40), params, CFG, step=40, data_position=1280, extra={"note": "x"}
    )
    save_checkpoint(checkpoint_path(tmp_path, 5), params, CFG, step=5, data_position=160)
    assert path.name == "step_00000040.safetensors"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 40]
    ckpt = load_checkpoint(path, expected_config=CFG)
    assert (ckpt.step, ckpt.data_position, ckpt.config, ckpt.extra) == (
        40,
        1280,
        CFG,
        {"note": "x"},
    )
    assert all(torch.equal(ckpt.params[k], params[k]) for k in params)
    with safe_open(str(path), framework="pt") as f:  # plain safetensors, JSON metadata
        meta = f.metadata()
    assert json.loads(meta["config"])["d_vocab"] == 11 and meta["step"] == "40"


def test_digest_is_content_hash(tmp_path) -> None:
    a = save_checkpoint(tmp_path / "a.safetensors", init_params(CFG, 0), CFG, 1, 32)
    b = save_checkpoint(tmp_path / "b.safetensors", init_params(CFG, 0), CFG, 1, 32)
    c = save_checkpoint(tmp_path / "c.safetensors", init_params(CFG, 1), CFG, 1, 32)
    assert checkpoint_digest(a) == checkpoint_digest(b) != checkpoint_digest(c)
    assert len(checkpoint_digest(a)) == 64


def test_architecture_mismatch_is_named(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "x.safetensors", init_params(CFG), CFG, 0, 0)
    other = dataclasses.replace(CFG, n_heads=4, d_vocab=12)
    with pytest.raises(
        ValueError, match=r"d_vocab: found 11, expected 12.*n_heads: found 2, expected 4"
    ):
        load_checkpoint(path, expected_config=other)


def test_foreign_files_are_rejected(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a patterning checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    bad = init_params(CFG)
    bad["embed.W_E"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"embed.W_E has shape \(3, 3\), expected \(11, 8\)"):
        save_checkpoint(tmp_path / "bad.safetensors", bad, CFG, 0, 0)
