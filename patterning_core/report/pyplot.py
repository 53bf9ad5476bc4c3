"""matplotlib, set up once for the whole project: the Agg backend (files, no display).

Every plotting module imports ``plt`` and ``save_figure`` from here, never matplotlib
directly, so the backend is chosen in one place and before pyplot is first imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plt", "save_figure"]


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
