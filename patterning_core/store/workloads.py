"""Workloads: everything a χ estimate needs, rebuilt from a small JSON-able spec.

The pipeline passes specs (dicts) and checkpoint paths between tasks, never tensors; each
worker rebuilds the workload it needs with ``build_workload(spec, checkpoint)``.

A spec is ``{"kind": NAME, ...settings}``; kinds are registered with ``register``:

- ``"toy-mlp"``: the small MLP of ``toy_models.make_mlp_regression`` (components
  ``hidden``, ``readout``); used by tests and examples;
- ``"transformer"``: an attention-only transformer checkpoint on its LM data;
- ``"model"``: any model spec (``model.adapters.spec``: the built-in transformer or a
  TransformerLens ``HookedTransformer``) on tokenized data from a safetensors file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from patterning_core.sampling.sgld import ConfigError, LossFn

__all__ = ["Workload", "build_workload", "register", "workload_kinds"]


@dataclass
class Workload:
    """A model at a checkpoint, its data, its probe units and its components.

    Attributes:
        loss_fn: per-unit losses, ``[B]`` or ``[B, T]``.
        params: the checkpoint w*.
        data: training units (SGLD minibatches and the fixed φ batch come from here).
        probes: the units z whose χ is estimated.
        components: ``{name: {param_name: bool mask}}``, in the order of χ's rows.
        unit_coords: ``{name: array [units]}`` labels of the probe units (flattened
            row-major for per-token probes), stored beside χ.
    """

    loss_fn: LossFn
    params: dict[str, Tensor]
    data: tuple[Tensor, ...]
    probes: tuple[Tensor, ...]
    components: dict[str, dict[str, Tensor]]
    unit_coords: dict[str, np.ndarray]

    def to(self, device: torch.device | str) -> Workload:
        """The same workload with every tensor on ``device``."""
        return Workload(
            loss_fn=self.loss_fn,
            params={k: v.to(device) for k, v in self.params.items()},
            data=tuple(t.to(device) for t in self.data),
            probes=tuple(t.to(device) for t in self.probes),
            components={
                c: {k: m.to(device) for k, m in ms.items()} for c, ms in self.components.items()
            },
            unit_coords=self.unit_coords,
        )


Builder = Callable[[Mapping, Path | None], Workload]
_BUILDERS: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
    """Register ``builder(spec, checkpoint) -> Workload`` under ``kind``."""

    def wrap(builder: Builder) -> Builder:
        _BUILDERS[kind] = builder
        return builder

    return wrap


def workload_kinds() -> list[str]:
    return sorted(_BUILDERS)


def build_workload(spec: Mapping, checkpoint: str | Path | None = None) -> Workload:
    """Rebuild the workload described by ``spec`` at ``checkpoint``."""
    kind = spec.get("kind")
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown workload kind {kind!r}; known kinds are {workload_kinds()}.")
    return _BUILDERS[kind](spec, Path(checkpoint) if checkpoint is not None else None)


@register("toy-mlp")
def _toy_mlp(spec: Mapping, checkpoint: Path | None) -> Workload:
    from patterning_core.toys.models import make_mlp_regression

    loss_fn, params, data = make_mlp_regression(
        n=int(spec.get("n", 256)),
        d_in=int(spec.get("d_in", 4)),
        hidden=int(spec.get("hidden", 8)),
        seed=int(spec.get("seed", 0)),
        train_steps=int(spec.get("train_steps", 100)),
    )
    n_probes = int(spec.get("probes", 6))
    ones = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    components = {
        "hidden": {"w1": ones["w1"], "b1": ones["b1"]},
        "readout": {"w2": ones["w2"], "b2": ones["b2"]},
    }
    return Workload(
        loss_fn,
        params,
        data,
        tuple(t[:n_probes] for t in data),
        components,
        {"example": np.arange(n_probes)},
    )


@register("transformer")
def _transformer(spec: Mapping, checkpoint: Path | None) -> Workload:
    """An attention-only transformer checkpoint on its LM data.

    Spec: ``{"kind": "transformer", "data": DATA_SPEC (see lm_data.py), "sgld_seqs": 2048,
    "probe_seqs": 8, "probe_seed": 0, "components": None or [names]}``. The SGLD data are
    ``sgld_seqs`` training sequences, the probes ``probe_seqs`` validation sequences; units
    are probe tokens (see ``lm_data.unit_labels``).
    """
    from patterning_core.data.lm_data import select_sequences, unit_labels
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components

    if checkpoint is None:
        raise ConfigError("a transformer workload needs a checkpoint path.")
    ckpt = load_checkpoint(checkpoint)
    tokens = _lm_tokens(json.dumps(spec["data"], sort_keys=True), json.dumps(ckpt.config.to_dict()))
    data = select_sequences(tokens.train, int(spec.get("sgld_seqs", 2048)), seed=0)
    probes = select_sequences(
        tokens.val, int(spec.get("probe_seqs", 8)), seed=int(spec.get("probe_seed", 0))
    )
    comps = components(ckpt.config)
    wanted = spec.get("components")
    if wanted:
        unknown = [c for c in wanted if c not in comps]
        if unknown:
            raise ConfigError(f"unknown component(s) {unknown}; valid: {list(comps)}.")
        comps = {c: comps[c] for c in wanted}
    return Workload(
        TransformerLoss(ckpt.config),
        ckpt.params,
        (data,),
        (probes,),
        comps,
        unit_labels(probes, tokens.token_strings),
    )


@functools.lru_cache(maxsize=2)
def _lm_tokens(data_spec: str, model_config: str):  # -> lm_data.LMTokens
    """``lm_data.load_lm_tokens`` memoized per process (JSON keys): a worker computing many
    shards of one run generates or tokenizes its data once, not once per shard. The
    result is shared: callers select from it and never modify it."""
    from patterning_core.data.lm_data import load_lm_tokens
    from patterning_core.model.transformer import TransformerConfig

    return load_lm_tokens(
        json.loads(data_spec), TransformerConfig.from_dict(json.loads(model_config))
    )


@register("model")
def _model(spec: Mapping, checkpoint: Path | None) -> Workload:
    """A model spec's checkpoint on tokenized data.

    Spec: ``{"kind": "model", "model": MODEL_SPEC (``adapters.spec``, without its
    checkpoint: the shard's checkpoint is given), "tokens": FILE, "sgld_seqs": None,
    "probe_seqs": None, "components": None or [names]}``. ``FILE`` is a safetensors file
    of int64 token ids ``train [N, T]`` (the SGLD data) and ``probes [M, T]`` (the probe
    sequences); the first ``sgld_seqs`` / ``probe_seqs`` rows are used (None: all). Units
    are probe tokens, labelled by ``sequence``, ``position`` (t + 1) and ``token_id``.
    """
    from patterning_core.model.adapters.spec import load_adapter, select_components

    model = dict(spec.get("model") or {})
    if model.get("kind") == "module":
        raise ConfigError(
            "a 'module' model runs through the library API (ModuleAdapter); the pipeline "
            "rebuilds its model in every worker from a spec: use 'builtin' or "
            "'transformer_lens'."
        )
    adapter = load_adapter(model, checkpoint)
    train, probes = load_token_file(spec.get("tokens"))
    sgld_seqs, probe_seqs = spec.get("sgld_seqs"), spec.get("probe_seqs")
    data = train if sgld_seqs is None else train[: int(sgld_seqs)]
    probes = probes if probe_seqs is None else probes[: int(probe_seqs)]
    comps = select_components(adapter.components(), spec.get("components"))
    target = probes[:, 1:]
    seq, pos = np.meshgrid(
        np.arange(target.shape[0]), np.arange(1, target.shape[1] + 1), indexing="ij"
    )
    coords = {"sequence": seq.ravel(), "position": pos.ravel(), "token_id": target.numpy().ravel()}
    return Workload(adapter, adapter.params(), (data,), (probes,), comps, coords)


def load_token_file(path: str | Path | None) -> tuple[Tensor, Tensor]:
    """``(train [N, T], probes [M, T])`` int64 token ids from a safetensors file; a missing
    file, a missing tensor or another dtype or rank is a ``ConfigError`` naming the fix."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path is None or not Path(path).is_file():
        raise ConfigError(
            f"token file {path} does not exist; write one with safetensors.torch.save_file("
            "{'train': LongTensor[N, T], 'probes': LongTensor[M, T]}, PATH)."
        )
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        raise ConfigError(f"token file {path} is not a safetensors file ({err}).") from None
    out = []
    for name in ("train", "probes"):
        t = tensors.get(name)
        if t is None or t.dim() != 2 or t.dtype != torch.int64 or t.shape[0] == 0:
            got = None if t is None else f"{t.dtype} {tuple(t.shape)}"
            raise ConfigError(
                f"token file {path}: '{name}' must be a non-empty int64 tensor [sequences, "
                f"tokens], got {got}."
            )
        out.append(t)
    return out[0], out[1]
