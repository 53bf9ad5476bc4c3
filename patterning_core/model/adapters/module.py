"""Any ``torch.nn.Module`` as a model adapter: a per-unit loss and components by name.

``ModuleAdapter(module, unit_loss, components)``:

- ``unit_loss(forward, batch) -> [B]`` or ``[B, T]``: the per-unit losses of ``batch`` (a
  tuple of tensors sharing dim 0), where ``forward(*args, **kwargs)`` calls ``module`` at
  the sampled parameters (``torch.func.functional_call``); e.g. for a classifier
  ``lambda forward, batch: F.cross_entropy(forward(batch[0]), batch[1], reduction="none")``;
- ``components``: ``{name: pattern or [patterns]}`` on parameter names (``fnmatch``
  globs such as ``"layers.0.*"``); a component moves the whole parameters it matches.

The sampler takes the generic path: ``unit_loss`` vmapped over lanes, so it must be
written in tensor ops that ``torch.func.vmap`` batches (no ``.item()``, no data-dependent
Python branches, no in-place updates of inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from patterning_core.model.adapters.base import ModelAdapter, masks_from_patterns, move_module
from patterning_core.sampling.sgld import ConfigError

__all__ = ["ModuleAdapter"]

UnitLoss = Callable[[Callable[..., Tensor], tuple[Tensor, ...]], Tensor]


class ModuleAdapter(ModelAdapter):
    """Adapter of a plain ``nn.Module`` (see the module docstring).

    Args:
        module: the model at the checkpoint w* (its ``named_parameters()``, in order).
        unit_loss: ``unit_loss(forward, batch)`` → per-unit losses.
        components: ``{name: pattern or [patterns]}``; every pattern must match a parameter.
    """

    kind = "module"

    def __init__(
        self,
        module: nn.Module,
        unit_loss: UnitLoss,
        components: Mapping[str, str | Sequence[str]],
    ):
        if not isinstance(module, nn.Module):
            got = type(module).__name__
            raise ConfigError(f"ModuleAdapter takes a torch.nn.Module, got {got}.")
        if not callable(unit_loss):
            raise ConfigError("unit_loss must be callable: unit_loss(forward, batch) -> losses.")
        self.module, self.unit_loss = module, unit_loss
        self._params = {n: p.detach() for n, p in module.named_parameters()}
        if not self._params:
            raise ConfigError(f"{type(module).__name__} has no parameters to sample.")
        self._components = masks_from_patterns(self._params, components)

    def params(self) -> dict[str, Tensor]:
        return dict(self._params)

    def loss(self, params: Mapping[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        def forward(*args: object, **kwargs: object) -> Tensor:
            return functional_call(self.module, dict(params), args, kwargs)

        return self.unit_loss(forward, tuple(batch))

    def components(self) -> dict[str, dict[str, Tensor]]:
        return {c: dict(m) for c, m in self._components.items()}

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ModuleAdapter:
        """The module's parameters and buffers on ``device`` (floating-point ones in
        ``dtype``), and the component masks on ``device``; in place, returns ``self``."""
        self._params = move_module(self.module, device, dtype)
        if device is not None:
            self._components = {
                c: {n: m.to(device) for n, m in ms.items()} for c, ms in self._components.items()
            }
        return self
