"""The configuration of a trained toy model, read off its weights.

Feature i is *represented* when its column of W has norm above ``threshold`` (trained
columns are bimodal: a represented feature has ‖W_i‖ ≈ 1, since x̂_i ≈ ‖W_i‖² x_i must
reproduce x_i, and a dropped one stays near 0 or below about 0.45 where its ReLU never
fires; the default 0.5 sits in the gap). With m = 2 the represented columns are points in
the hidden plane; sorted by angle they form a polygon, a *regular k-gon* when every angular
gap between neighbours is within ``gap_tolerance``·(2π/k) of 2π/k. Two features sharing a
direction (gap ≈ 0) make the polygon irregular.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Configuration", "read_configuration", "read_configurations"]


@dataclass(frozen=True)
class Configuration:
    """What a trained model represents.

    Attributes:
        represented: feature indices with ‖W_i‖ > threshold, ascending.
        order: the represented features sorted by their angle in the hidden plane.
        norms: ‖W_i‖ of every feature.
        max_gap_error: max over neighbours |gap − 2π/k| / (2π/k) (0 for an exact k-gon; NaN
            unless m = 2 and k ≥ 2).
        regular: the polygon is a regular k-gon within the tolerance.
    """

    represented: tuple[int, ...]
    order: tuple[int, ...]
    norms: tuple[float, ...]
    max_gap_error: float
    regular: bool

    @property
    def k(self) -> int:
        return len(self.represented)

    @property
    def label(self) -> str:
        """e.g. ``"5-gon {0,1,2,3,5}"``; ``"4 features (irregular) {…}"`` otherwise."""
        members = "{" + ",".join(str(i) for i in self.represented) + "}"
        shape = f"{self.k}-gon" if self.regular else f"{self.k} features (irregular)"
        return f"{shape} {members}"

    def to_dict(self) -> dict:
        return {
            "represented": list(self.represented),
            "order": list(self.order),
            "norms": list(self.norms),
            "max_gap_error": self.max_gap_error,
            "regular": self.regular,
            "k": self.k,
            "label": self.label,
        }


def read_configuration(
    W: np.ndarray, threshold: float = 0.5, gap_tolerance: float = 0.25
) -> Configuration:
    """The configuration of one model, ``W [m, n]``."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=0)
    represented = tuple(int(i) for i in np.flatnonzero(norms > threshold))
    k = len(represented)
    if W.shape[0] != 2 or k < 2:
        order = represented
        error = float("nan")
        regular = W.shape[0] == 2 and k == 1
    else:
        angles = np.arctan2(W[1, list(represented)], W[0, list(represented)])
        idx = np.argsort(angles)
        order = tuple(represented[i] for i in idx)
        sorted_angles = angles[idx]
        gaps = np.diff(np.concatenate([sorted_angles, sorted_angles[:1] + 2 * math.pi]))
        ideal = 2 * math.pi / k
        error = float(np.max(np.abs(gaps - ideal)) / ideal)
        regular = error <= gap_tolerance
    return Configuration(
        represented=represented,
        order=order,
        norms=tuple(float(v) for v in norms),
        max_gap_error=error,
        regular=bool(regular),
    )


def read_configurations(
    W: np.ndarray, threshold: float = 0.5, gap_tolerance: float = 0.25
) -> list[Configuration]:
    """Configurations of a batch of models, ``W [S, m, n]``."""
    return [read_configuration(w, threshold, gap_tolerance) for w in np.asarray(W)]
