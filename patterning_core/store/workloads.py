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

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Workload:
        """The workload with every tensor on ``device`` (None: where it is) and every
        floating-point one in ``dtype`` (None: unchanged; token ids and masks keep theirs).

        A ``loss_fn`` that is a model adapter moves too (``ModelAdapter.to``, in place: the
        returned workload shares it): whatever its loss reads besides ``params``, such as a
        ``HookedTransformer``'s or a module's buffers, must sit on the device of ``params``.
        """
        from patterning_core.model.adapters.base import ModelAdapter

        def move(t: Tensor) -> Tensor:
            cast = dtype if dtype is not None and t.is_floating_point() else None
            return t.to(device=device, dtype=cast)

        loss_fn = self.loss_fn
        if isinstance(loss_fn, ModelAdapter):
            loss_fn = loss_fn.to(device, dtype)
        return Workload(
            loss_fn=loss_fn,
            params={k: move(v) for k, v in self.params.items()},
            data=tuple(move(t) for t in self.data),
            probes=tuple(move(t) for t in self.probes),
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
    "probe_seqs": 8, "probe_seed": 0, "probe_repeat": 0.0, "probe_synthetic": 0,
    "probe_outline": 0,
    "components": None or [names]}``. The SGLD data are ``sgld_seqs`` training sequences,
    the probes ``probe_seqs`` validation sequences (``lm_data.workload_probes``: with
    ``probe_repeat`` a share of them repeat their first half), followed by
    ``probe_outline`` held-out outline sequences and ``probe_synthetic`` synthetic
    in-context-bigram sequences; units are probe tokens (see
    ``lm_data.unit_labels``; with synthetic probes also ``synthetic``, True on their units).
    """
    from patterning_core.data.lm_data import select_sequences, unit_labels, workload_probes
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components

    if checkpoint is None:
        raise ConfigError("a transformer workload needs a checkpoint path.")
    ckpt = load_checkpoint(checkpoint)
    tokens = _lm_tokens(json.dumps(spec["data"], sort_keys=True), json.dumps(ckpt.config.to_dict()))
    data = select_sequences(tokens.train, int(spec.get("sgld_seqs", 2048)), seed=0)
    probes = workload_probes(tokens.val, spec, ckpt.config.d_vocab, tokens.tokenizer)
    labels = unit_labels(probes, tokens.token_strings)
    n_synthetic = int(spec.get("probe_synthetic", 0))
    if n_synthetic:
        labels["synthetic"] = np.repeat(
            np.arange(probes.shape[0]) >= probes.shape[0] - n_synthetic, probes.shape[1] - 1
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
        labels,
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
    """A model spec's checkpoint on its data.

    Spec: ``{"kind": "model", "model": MODEL_SPEC, "sgld_seqs": None, "probe_seqs": None,
    "components": None or [names]}`` with the data as one of

    - ``"tokens": FILE`` (token models): a safetensors file of int64 token ids ``train
      [N, T]`` (the SGLD data) and ``probes [M, T]`` (the probe sequences); the first
      ``sgld_seqs`` / ``probe_seqs`` rows are used (None: all); units are probe tokens,
      labelled by ``sequence``, ``position`` (t + 1) and ``token_id``;
    - ``"data": DATA_SPEC`` (token models; ``lm_data.py``, the built-in path's corpus or
      synthetic settings): sequences of the model's context, BPE-tokenized with its
      vocabulary size, drawn as the ``"transformer"`` workload draws them (``sgld_seqs``
      default 2048, ``probe_seqs`` 8); units also carry ``token_text`` and
      ``pattern_class``. A TransformerLens model's ``d_vocab`` must equal the tokenizer's
      vocabulary size (its token ids mean the tokenizer's tokens);
    - ``"data_file": FILE`` (``module`` models): a safetensors file of the batches, tensors
      ``train`` and ``probes`` (a batch of one tensor) or ``train.0``, ``train.1``, … and
      ``probes.0``, … (a batch of several), every tensor's rows the examples; units are the
      probes' per-unit losses, labelled by ``example`` (and ``index``, for losses ``[B, T]``).

    ``MODEL_SPEC`` is an ``adapters.spec`` model spec without its checkpoint (the shard's
    checkpoint is given), made of plain values: a module's factory and loss are import
    strings. ``components`` selects rows (a module's components are its spec's own).
    """
    from patterning_core.model.adapters.spec import load_adapter, select_components

    model = dict(spec.get("model") or {})
    if "module" in model:
        raise ConfigError(
            "a workload rebuilds its model in every worker from plain values: give a "
            "'module' model by import strings, factory 'package.module:build_model' and "
            "loss 'package.module:unit_loss', not a Python object."
        )
    sources = [k for k in ("tokens", "data", "data_file") if spec.get(k) is not None]
    token_model = model.get("kind") != "module"
    allowed = ("tokens", "data") if token_model else ("data_file",)
    if len(sources) != 1 or sources[0] not in allowed:
        what = "tokens (a token file) or data (corpus settings)" if token_model else "data_file"
        raise ConfigError(
            f"a {model.get('kind')!r} model takes its data from {what}: one of them"
            + (f"; got {sources}." if sources else ".")
        )
    adapter = load_adapter(model, checkpoint)
    sgld_seqs, probe_seqs = spec.get("sgld_seqs"), spec.get("probe_seqs")
    coords: dict[str, np.ndarray]
    if sources == ["data"]:
        data, probes, coords = _corpus_data(spec["data"], adapter, sgld_seqs, probe_seqs)
        data, probes = (data,), (probes,)
    else:
        if sources == ["tokens"]:
            train_t, probe_t = load_token_file(spec["tokens"])
            data, probes = (train_t,), (probe_t,)
        else:
            data, probes = load_batch_file(spec["data_file"])
        if sgld_seqs is not None:
            data = tuple(t[: int(sgld_seqs)] for t in data)
        if probe_seqs is not None:
            probes = tuple(t[: int(probe_seqs)] for t in probes)
        coords = _token_coords(probes[0]) if token_model else _example_coords(adapter, probes)
    comps = select_components(adapter.components(), spec.get("components"))
    return Workload(adapter, adapter.params(), data, probes, comps, coords)


def _token_coords(probes: Tensor) -> dict[str, np.ndarray]:
    """Labels of the per-token units of ``probes [M, T]``, row-major ``[M·(T−1)]``."""
    target = probes[:, 1:]
    seq, pos = np.meshgrid(
        np.arange(target.shape[0]), np.arange(1, target.shape[1] + 1), indexing="ij"
    )
    return {"sequence": seq.ravel(), "position": pos.ravel(), "token_id": target.numpy().ravel()}


def _example_coords(adapter, probes: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    """Labels of a module's probe units: ``example`` for losses ``[M]``, ``example`` and
    ``index`` (row-major) for ``[M, T]``; the shape is read from one probe's loss."""
    adapter.check(probes)  # the loss runs and is per unit, before its shape is read
    with torch.no_grad():
        out = adapter.loss(adapter.params(), tuple(t[:1] for t in probes))
    m = probes[0].shape[0]
    if out.dim() == 1:
        return {"example": np.arange(m)}
    example, index = np.meshgrid(np.arange(m), np.arange(out.shape[1]), indexing="ij")
    return {"example": example.ravel(), "index": index.ravel()}


def _corpus_data(
    data_spec: Mapping, adapter, sgld_seqs: int | None, probe_seqs: int | None
) -> tuple[Tensor, Tensor, dict[str, np.ndarray]]:
    """SGLD sequences, probe sequences and unit labels from a data spec, for a token model
    (the built-in transformer or a ``HookedTransformer``), as the ``"transformer"``
    workload makes them."""
    from patterning_core.data.lm_data import select_sequences, unit_labels

    shape = token_model_shape(adapter)
    tokens = _lm_tokens(json.dumps(data_spec, sort_keys=True), json.dumps(shape.to_dict()))
    if adapter.kind == "transformer_lens" and len(tokens.token_strings) != shape.d_vocab:
        raise ConfigError(
            f"the data's tokenizer has {len(tokens.token_strings)} tokens but the model's "
            f"d_vocab is {shape.d_vocab}: its token ids would not mean the tokenizer's "
            f"tokens. Use a model with d_vocab = {len(tokens.token_strings)}, or a corpus "
            "large enough for a tokenizer of d_vocab tokens (data.paths), or give the "
            "model's own tokenized data as a token file (tokens)."
        )
    data = select_sequences(tokens.train, int(sgld_seqs or 2048), seed=0)
    probes = select_sequences(tokens.val, int(probe_seqs or 8), seed=0)
    return data, probes, unit_labels(probes, tokens.token_strings)


def token_model_shape(adapter):  # -> TransformerConfig
    """The shape a data spec is made for (context ``n_ctx``, vocabulary ``d_vocab``): the
    built-in model's config, or a ``HookedTransformer``'s as a ``TransformerConfig``."""
    from patterning_core.model.transformer import TransformerConfig

    if adapter.kind == "builtin":
        return adapter.config
    if adapter.kind == "transformer_lens":
        cfg = adapter.cfg
        return TransformerConfig(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            n_ctx=cfg.n_ctx,
            d_vocab=cfg.d_vocab,
        )
    raise ConfigError(
        f"corpus data (data) are for token models (builtin, transformer_lens), not a "
        f"{adapter.kind!r} model: give its batches as a data_file."
    )


def _read_safetensors(path: str | Path | None, what: str, fix: str) -> dict[str, Tensor]:
    """Every tensor of a safetensors file; a missing or unreadable file is a ``ConfigError``
    naming ``what`` it is and, for a missing one, the ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path is None or not Path(path).is_file():
        raise ConfigError(f"{what} {path} does not exist; {fix}.")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise ConfigError(f"{what} {path} is not a safetensors file ({err}).") from None


def load_token_file(path: str | Path | None) -> tuple[Tensor, Tensor]:
    """``(train [N, T], probes [M, T])`` int64 token ids from a safetensors file; a missing
    file, a missing tensor or another dtype or rank is a ``ConfigError`` naming the fix."""
    tensors = _read_safetensors(
        path,
        "token file",
        "write one with safetensors.torch.save_file({'train': LongTensor[N, T], 'probes': "
        "LongTensor[M, T]}, PATH)",
    )
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


def load_batch_file(path: str | Path | None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """``(train, probes)`` batches (tuples of tensors sharing dim 0) from a safetensors file
    holding ``train`` and ``probes``, or ``train.0``, ``train.1``, … and ``probes.0``, …
    (same count); a ``ConfigError`` naming the fix otherwise."""
    fix = (
        "write one with safetensors.torch.save_file({'train.0': x, 'train.1': y, "
        "'probes.0': x_probe, 'probes.1': y_probe}, PATH) (or 'train' and 'probes' for "
        "batches of one tensor)"
    )
    tensors = _read_safetensors(path, "data file", fix)
    out = []
    for name in ("train", "probes"):
        if name in tensors:
            parts = [tensors[name]]
        else:
            parts = []
            while f"{name}.{len(parts)}" in tensors:
                parts.append(tensors[f"{name}.{len(parts)}"])
        rows = {t.shape[0] if t.dim() else 0 for t in parts}
        if not parts or len(rows) != 1 or 0 in rows:
            raise ConfigError(
                f"data file {path}: '{name}' must be one tensor or '{name}.0', '{name}.1', … "
                f"with the same number (> 0) of rows; found {sorted(tensors)}; {fix}."
            )
        out.append(tuple(parts))
    if len(out[0]) != len(out[1]):
        raise ConfigError(f"data file {path}: train and probes hold batches of different arity.")
    return out[0], out[1]
