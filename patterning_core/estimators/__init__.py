"""Estimators built on the sampler: the LLC (method.md §4), per-unit susceptibilities χ
(§1–2), their decomposition into modes (§5), the intervention solver (§6) and the
linear-response check (§8).

May import ``patterning_core.sampling``; nothing from models, data or experiments.
"""

from patterning_core.estimators.decomposition import decompose, standardize
from patterning_core.estimators.intervention import solve_intervention
from patterning_core.estimators.llc import LLCResult, estimate_llc
from patterning_core.estimators.susceptibility import (
    CHI_CONVENTION,
    chi_from_stats,
    estimate_susceptibilities,
    merge_stats,
    sample_susceptibility_stats,
)

__all__ = [
    "CHI_CONVENTION",
    "LLCResult",
    "chi_from_stats",
    "decompose",
    "estimate_llc",
    "estimate_susceptibilities",
    "merge_stats",
    "sample_susceptibility_stats",
    "solve_intervention",
    "standardize",
]
