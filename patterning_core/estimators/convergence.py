"""Is χ converged at the chosen SGLD settings? Agreement with longer runs, measured against
the seed-to-seed noise.

Three estimates of the same χ (any shape, e.g. ``[component, unit]``), each from its own
SGLD seed: ``chosen`` (the settings used), ``replica`` (the same settings, another seed),
and a ``variant`` (e.g. twice the draws, or with a burn-in). Write σ² for the expected
squared Frobenius error of one chosen-settings estimate and b for the variant's systematic
difference from the chosen settings (what the check is for). With independent seeds,

    E‖chosen − replica‖² = 2σ²,
    E‖chosen − variant‖² = σ² + r·σ² + ‖b‖²,   r = draws(chosen)/draws(variant)

(the variant's noise is r·σ² when it only has more draws of the same chains). So

    ‖b‖² ≈ ‖chosen − variant‖² − (1 + r)/2·‖chosen − replica‖²,

and the settings *agree within the seed-to-seed noise* when ‖b‖² ≤ σ², i.e. the estimated
bias is no larger than one estimate's own noise (:func:`variant_agreement`). The estimate of
‖b‖² is itself noisy (it can come out negative: no detectable bias).
"""

from __future__ import annotations

import numpy as np


def _sq(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def variant_agreement(
    chosen: np.ndarray, replica: np.ndarray, variant: np.ndarray, draw_ratio: float = 1.0
) -> dict[str, float | bool]:
    """Bias of ``variant`` against the chosen settings, in units of the seed noise.

    Args:
        chosen, replica: χ at the chosen settings, two SGLD seeds.
        variant: χ at other settings (another seed).
        draw_ratio: r = draws(chosen) / draws(variant) (0.5 for twice the draws; 1 for a
            run with a burn-in and the same number of draws).

    Returns ``noise_sq`` (σ² = ‖chosen − replica‖²/2), ``distance_sq``
    (‖chosen − variant‖²), ``bias_sq`` (module doc), ``bias_over_noise`` (‖b‖²/σ²),
    ``relative_noise`` (σ/‖chosen‖) and ``agrees`` (‖b‖² ≤ σ²).
    """
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (chosen, replica, variant))
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"χ estimates of different shapes: {a.shape}, {b.shape}, {c.shape}.")
    noise_sq = _sq(a - b) / 2
    distance_sq = _sq(a - c)
    bias_sq = distance_sq - (1 + draw_ratio) * noise_sq
    return {
        "noise_sq": noise_sq,
        "distance_sq": distance_sq,
        "bias_sq": bias_sq,
        "bias_over_noise": bias_sq / noise_sq if noise_sq > 0 else float("inf"),
        "relative_noise": float(np.sqrt(noise_sq / _sq(a))) if _sq(a) > 0 else float("inf"),
        "agrees": bool(bias_sq <= noise_sq),
    }
