"""Slow: the spacing experiment end to end at small sizes (one seed, 500 steps, 10 draws)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_spacing_script_runs_and_reports(tmp_path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "spacing_patterning.py"
    spec = importlib.util.spec_from_file_location("spacing_patterning", script)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    args = ["--out", str(out), "--work", str(tmp_path / "work"), "--steps", "500"]
    args += ["--chi-step", "250", "--seeds", "0", "--draws", "10", "--eval-seqs", "64"]
    assert module.main([*args, "--no-progress"]) == 0
    numbers = json.loads((out / "spacing.json").read_text())
    assert (out / "spacing.png").stat().st_size > 1000
    assert "## Retraining" in (out / "spacing.md").read_text()
    conditions = {(r["condition"], r["seed"]) for r in numbers["results"]}
    assert conditions == {("baseline", 0), ("amplify", 0), ("suppress", 0)}
    # the chosen mode is the one whose unit loadings track whitespace targets most closely
    corr = {int(m): abs(c) for m, c in numbers["whitespace_correlation"].items()}
    assert numbers["mode"] == max(corr, key=corr.get)
