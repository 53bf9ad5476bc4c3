"""Localized SGLD over many chains and runs, its configuration, streaming statistics and
convergence diagnostics (method.md §3).

Imports only torch and numpy; nothing else of the project.
"""

from patterning_core.sampling.config import ConfigError, SamplerConfig
from patterning_core.sampling.diagnostics import split_rhat
from patterning_core.sampling.sgld import (
    DrawContext,
    LaneForward,
    LossFn,
    Run,
    SamplerDivergence,
    as_data_tuple,
    evaluate_in_chunks,
    full_run,
    lane_seed,
    run_sgld,
    validate_masks,
)
from patterning_core.sampling.stats import CoMomentAccumulator

__all__ = [
    "CoMomentAccumulator",
    "ConfigError",
    "DrawContext",
    "LaneForward",
    "LossFn",
    "Run",
    "SamplerConfig",
    "SamplerDivergence",
    "as_data_tuple",
    "evaluate_in_chunks",
    "full_run",
    "lane_seed",
    "run_sgld",
    "split_rhat",
    "validate_masks",
]
