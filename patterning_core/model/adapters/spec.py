"""Model specs: a small dict that names a model, checked before anything runs.

``load_adapter(spec)`` returns the ``ModelAdapter`` of

- ``{"kind": "builtin", "checkpoint": FILE}``: a built-in transformer checkpoint
  (``checkpoints.py``);
- ``{"kind": "transformer_lens", "config": {HookedTransformerConfig fields}, "checkpoint":
  FILE or None, "dtype": "float32" | "float64"}``: a ``HookedTransformer`` built offline
  from its config, with the weights of a local safetensors state dict (``tl.py``);
- ``{"kind": "module", "module": nn.Module, "unit_loss": callable, "components": {name:
  patterns}}``: any module (Python objects: for the library API, not for config files).

Every spec may add ``"components": [names]``, the rows of χ wanted (default: all the
adapter's components); :func:`select_components` applies it. Errors (``ConfigError``, or
``FileNotFoundError`` for a missing checkpoint) name the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from patterning_core.model.adapters.base import ModelAdapter
from patterning_core.sampling.sgld import ConfigError

__all__ = ["MODEL_KINDS", "check_model_spec", "load_adapter", "select_components"]

MODEL_KINDS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required keys, optional keys), besides "kind" and "components"
    "builtin": ({"checkpoint"}, set()),
    "transformer_lens": ({"config"}, {"checkpoint", "dtype"}),
    "module": ({"module", "unit_loss", "components"}, set()),
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_model_spec(spec: Mapping[str, Any]) -> None:
    """Raise unless ``spec`` names a known kind with its required keys and no unknown ones,
    and its checkpoint file (if any) exists. Reads no weights."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a model spec is a dict with a 'kind', got {type(spec).__name__}.")
    kind = spec.get("kind")
    if kind not in MODEL_KINDS:
        raise ConfigError(
            f"unknown model kind {kind!r}; the kinds are {sorted(MODEL_KINDS)} "
            '(e.g. {"kind": "builtin", "checkpoint": "run/step_00001000.safetensors"}).'
        )
    required, optional = MODEL_KINDS[kind]
    missing = sorted(required - set(spec))
    if missing:
        raise ConfigError(f"a {kind!r} model spec needs {missing}.")
    known = required | optional | {"kind", "components"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in a {kind!r} model spec; keys: {sorted(known)}."
        )
    dtype = spec.get("dtype")
    if dtype is not None and dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    checkpoint = spec.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"model checkpoint {checkpoint} does not exist (spec kind {kind!r}); give the path "
            "of an existing .safetensors file (list a run's checkpoints with "
            "patterning_core.model.checkpoints.list_checkpoints(run_dir))."
        )
    wanted = spec.get("components", [] if kind != "module" else {})
    if kind != "module" and (
        isinstance(wanted, str) or not all(isinstance(c, str) for c in wanted)
    ):
        raise ConfigError("components must be a list of component names, e.g. ['L1H0', 'L1H3'].")


def load_adapter(spec: Mapping[str, Any], checkpoint: str | Path | None = None) -> ModelAdapter:
    """The adapter of ``spec`` (module docstring); ``checkpoint`` overrides the spec's own
    (a pipeline shard's checkpoint). Checks the spec first (:func:`check_model_spec`)."""
    spec = dict(spec)
    if checkpoint is not None:
        spec["checkpoint"] = str(checkpoint)
    check_model_spec(spec)
    kind = spec["kind"]
    if kind == "builtin":
        from patterning_core.model.adapters.builtin import BuiltinTransformer
        from patterning_core.model.checkpoints import load_checkpoint

        ckpt = load_checkpoint(spec["checkpoint"])
        return BuiltinTransformer(ckpt.config, ckpt.params)
    if kind == "transformer_lens":
        from patterning_core.model.adapters.tl import TransformerLensModel, load_hooked_transformer

        dtype = _DTYPES[spec["dtype"]] if spec.get("dtype") else None
        model = load_hooked_transformer(spec["config"], spec.get("checkpoint"), dtype=dtype)
        return TransformerLensModel(model)
    from patterning_core.model.adapters.module import ModuleAdapter

    return ModuleAdapter(spec["module"], spec["unit_loss"], spec["components"])


def select_components(
    components: Mapping[str, Mapping[str, Tensor]], names: Sequence[str] | None
) -> dict[str, dict[str, Tensor]]:
    """``components`` restricted to ``names`` in that order (None or empty: all of them);
    an unknown name is a ``ConfigError`` listing the valid ones."""
    if not names:
        return {c: dict(m) for c, m in components.items()}
    unknown = [n for n in names if n not in components]
    if unknown:
        raise ConfigError(f"unknown component(s) {unknown}; the model has {list(components)}.")
    return {n: dict(components[n]) for n in names}
