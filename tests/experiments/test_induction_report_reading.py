"""The induction report's reading of natural-text copying (``scripts/induction_report.py``),
on the three regimes it has measured: the demo's circuit (3.34 → 1.90 nats), the corpus-only
``induce_wide`` run (2.451 → 2.037: copying without a random-token circuit) and an untrained
model (6.563 → 6.566)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "induction_report.py"
    spec = importlib.util.spec_from_file_location("induction_report", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_copying_reading_names_each_regime() -> None:
    read = _script().copying_reading
    assert read(3.34, 1.90).startswith("the second copy is predicted by copying")
    partial = read(2.451, 2.037)
    assert partial.startswith("partial copying") and "17%" in partial  # 1 − 2.037/2.451
    assert read(6.563, 6.566).startswith("no copying")
    assert read(2.0, 1.9).startswith("partial copying")  # exactly 5 % less
