"""Model specs: a small dict that names a model, checked before anything runs.

``load_adapter(spec)`` returns the ``ModelAdapter`` of

- ``{"kind": "builtin", "checkpoint": FILE}``: a built-in transformer checkpoint
  (``checkpoints.py``);
- ``{"kind": "transformer_lens", "config": {HookedTransformerConfig fields}, "checkpoint":
  FILE or None, "dtype": "float32" | "float64"}``: a ``HookedTransformer`` built offline
  from its config, with the weights of a local safetensors state dict (``tl.py``);
- ``{"kind": "module", "factory": "package.module:build_model", "loss":
  "package.module:unit_loss", "components": {name: patterns}, "config": {kwargs} or None,
  "checkpoint": FILE or None, "dtype": ...}``: any ``nn.Module`` (``module.py``):
  ``factory(**config)`` builds it, the weights of a local safetensors state dict replace
  its own, ``loss(forward, batch)`` gives per-unit losses, ``components`` are
  parameter-name patterns. ``factory`` and ``loss`` are import strings (a config file) or
  callables (the library API, where ``"module": nn.Module`` may stand for the factory).

A builtin or transformer_lens spec may add ``"components": [names]``, the rows of χ wanted
(default: all the adapter's components); :func:`select_components` applies it. Errors
(``ConfigError``, or ``FileNotFoundError`` for a missing checkpoint) name the field and the
fix; :func:`check_model_spec` finds every one of them that needs no weights, including an
import string that does not import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from patterning_core.model.adapters.base import ModelAdapter
from patterning_core.sampling.sgld import ConfigError

__all__ = [
    "MODEL_KINDS",
    "check_model_spec",
    "import_object",
    "load_adapter",
    "select_components",
]

MODEL_KINDS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required keys, optional keys), besides "kind" and "components"
    "builtin": ({"checkpoint"}, set()),
    "transformer_lens": ({"config"}, {"checkpoint", "dtype"}),
    "module": ({"loss", "components"}, {"factory", "module", "config", "checkpoint", "dtype"}),
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
    if kind == "module":
        _check_module_spec(spec)
        return
    wanted = spec.get("components") or []
    if isinstance(wanted, str) or not all(isinstance(c, str) for c in wanted):
        raise ConfigError("components must be a list of component names, e.g. ['L1H0', 'L1H3'].")


def _check_module_spec(spec: Mapping[str, Any]) -> None:
    """A module spec's own checks: one model source, callables that import, components as
    ``{name: patterns}``, ``config`` a dict of keyword arguments."""
    if ("factory" in spec) == ("module" in spec):
        raise ConfigError(
            "a 'module' model spec needs a factory ('package.module:build_model', called "
            "with the spec's config as keyword arguments) or, in the library API, a module "
            "(an nn.Module): one of them."
        )
    if "module" in spec and not isinstance(spec["module"], nn.Module):
        got = type(spec["module"]).__name__
        raise ConfigError(f"model.module must be a torch.nn.Module, got {got}.")
    if "factory" in spec:
        _callable(spec["factory"], "factory")
    _callable(spec["loss"], "loss")
    config = spec.get("config")
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(
            f"model.config of a 'module' spec is the factory's keyword arguments (a dict), "
            f"got {type(config).__name__}."
        )
    if config and "module" in spec:
        raise ConfigError("model.config is the factory's arguments: give a factory, or no config.")
    comps = spec["components"]
    ok = isinstance(comps, Mapping) and all(
        isinstance(p, str) or (isinstance(p, Sequence) and all(isinstance(q, str) for q in p))
        for p in comps.values()
    )
    if not ok or not comps:
        raise ConfigError(
            "a 'module' model's components are {name: parameter-name pattern or [patterns]}, "
            "e.g. {'hidden': '0.*', 'readout': ['2.weight', '2.bias']}."
        )


def _callable(value: Any, field: str) -> Callable:
    """``value`` if callable, else the object its import string names (``ConfigError``
    naming the field otherwise)."""
    if callable(value):
        return value
    obj = import_object(value, f"model.{field}")
    if not callable(obj):
        raise ConfigError(f"model.{field} {value!r} is a {type(obj).__name__}, not callable.")
    return obj


def import_object(path: Any, field: str = "import string") -> Any:
    """The object an import string ``"package.module:name"`` (``name`` may be dotted, e.g.
    ``"pkg.models:Net.build"``) names.

    Raises ``ConfigError`` naming ``field`` and the fix: not of that form, a module that
    does not import (the reason given; it must be importable by the flow's process and its
    workers: an installed package, or a folder on ``PYTHONPATH``), a missing attribute.
    """
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ConfigError(f"{field} must be an import string 'package.module:name', got {path!r}.")
    module_name, attr = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # an ImportError, or any error the module raises on import
        raise ConfigError(
            f"{field} {path!r}: module {module_name!r} does not import "
            f"({type(err).__name__}: {err}); make it importable where the flow and its "
            "workers run (install its package, or add its folder to PYTHONPATH)."
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"{field} {path!r}: {module_name!r} has no attribute {attr!r}; check the name."
            )
        obj = getattr(obj, part)
    return obj


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
    return _module_adapter(spec)


def _module_adapter(spec: Mapping[str, Any]) -> ModelAdapter:
    """The ``ModuleAdapter`` of a checked module spec: build, cast, load the weights."""
    from patterning_core.model.adapters.base import load_state_file
    from patterning_core.model.adapters.module import ModuleAdapter

    if "module" in spec:
        module = spec["module"]
    else:
        factory = _callable(spec["factory"], "factory")
        try:
            module = factory(**dict(spec.get("config") or {}))
        except TypeError as err:
            raise ConfigError(
                f"model.factory {spec['factory']!r} refused model.config as keyword "
                f"arguments ({err}); give config the factory's parameters."
            ) from None
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"model.factory {spec['factory']!r} returned a {type(module).__name__}, "
                "not a torch.nn.Module."
            )
    if spec.get("dtype"):
        module = module.to(_DTYPES[spec["dtype"]])
    if spec.get("checkpoint") is not None:
        load_state_file(
            module,
            spec["checkpoint"],
            what="module checkpoint",
            fits=f"the module model.factory {spec['factory']!r} builds"
            if "factory" in spec
            else "the module",
            fix="save the state dict of the module the factory builds with this config",
        )
    return ModuleAdapter(module, _callable(spec["loss"], "loss"), spec["components"])


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
