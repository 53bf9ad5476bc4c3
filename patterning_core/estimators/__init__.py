"""Estimators built on the sampler: the LLC (method.md §4), per-unit susceptibilities χ
(§1–2), their decomposition into modes (§5) and the readouts of a store's χ (``chi_map``:
spectra, token embeddings, modes matched over training), the intervention solver (§6) and
the linear-response check (§8).

May import ``patterning_core.sampling``; nothing from models, data or experiments.
"""

from patterning_core.estimators.chi_map import (
    ChiMapSettings,
    checkpoint_readout,
    coordinate_correlation,
    match_modes,
)
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
    "ChiMapSettings",
    "LLCResult",
    "checkpoint_readout",
    "chi_from_stats",
    "coordinate_correlation",
    "decompose",
    "estimate_llc",
    "estimate_susceptibilities",
    "match_modes",
    "merge_stats",
    "sample_susceptibility_stats",
    "solve_intervention",
    "standardize",
]
