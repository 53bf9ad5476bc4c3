"""The short cut of the benchmark workload, shared by ``adapters.py`` and ``lane_profile.py``:
the ``bench`` transformer at initialization, random tokens, the 16 heads, the demo's sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ShortWorkload:
    """``data [2048, 64]`` and ``probes [8, 64]`` token ids; ``heads``: the 16 heads' masks."""

    cfg: object  # TransformerConfig
    params: dict[str, torch.Tensor]
    data: torch.Tensor
    probes: torch.Tensor
    heads: dict[str, dict[str, torch.Tensor]]
    sampler: object  # SamplerConfig


def short_workload(draws: int) -> ShortWorkload:
    """The ``bench`` model at initialization (seed 0), data and probes drawn from seed 0, and
    the demo's sampler (ε 1e-3, nβ 30, γ 300, 4 chains, batch 16) with ``draws`` draws."""
    from patterning_core.model.transformer import components, init_params, preset
    from patterning_core.recipes import demo_sampler
    from patterning_core.sampling.sgld import SamplerConfig

    cfg = preset("bench")
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.d_vocab, (2048, cfg.n_ctx), generator=gen)
    probes = torch.randint(0, cfg.d_vocab, (8, cfg.n_ctx), generator=gen)
    return ShortWorkload(
        cfg=cfg,
        params=init_params(cfg, 0),
        data=data,
        probes=probes,
        heads={k: v for k, v in components(cfg).items() if k.startswith("L")},
        sampler=SamplerConfig.from_dict(demo_sampler()).replace(num_draws=draws),
    )
