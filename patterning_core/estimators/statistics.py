"""Statistics the demonstrations report: the Wilson interval of a binomial proportion, the
one-sided rank p-value of a result among controls and Fisher's combination of p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["fisher_combined", "rank_p_value", "wilson_interval"]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % for the default z).

    (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n); (0, 1) when ``trials`` is 0.
    """
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rank_p_value(value: float, controls: Sequence[float], *, greater: bool = True) -> float:
    """One-sided rank p-value of ``value`` among exchangeable ``controls``: (1 + the number
    of controls at or beyond it) / (1 + len(controls)); "beyond" is ≥ when ``greater``
    (is the value exceptionally high?), else ≤. The smallest possible is 1 / (1 + n)."""
    if not controls:
        raise ValueError("rank_p_value needs at least one control.")
    beyond = sum(1 for c in controls if (c >= value if greater else c <= value))
    return (1 + beyond) / (1 + len(controls))


def fisher_combined(p_values: Sequence[float]) -> float:
    """Fisher's combination of independent p-values: P(χ²_2k ≥ −2 Σ ln p) for k values,
    in the closed form of the χ² tail at even degrees of freedom,
    e^(−x/2) Σ_{i<k} (x/2)^i / i!. One value gives itself back."""
    if not p_values or not all(0 < p <= 1 for p in p_values):
        raise ValueError(f"fisher_combined needs p-values in (0, 1], got {list(p_values)}.")
    half = -sum(math.log(p) for p in p_values)  # x / 2
    return math.exp(-half) * sum(half**i / math.factorial(i) for i in range(len(p_values)))
