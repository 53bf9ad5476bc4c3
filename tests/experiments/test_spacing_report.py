"""Slow: the spacing flow on the default corpus at small sizes (one seed, 500 steps, 10
draws), as `patterning spacing --seeds 0 --steps 500 --chi-step 250 --draws 10` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.timeout(3600)
def test_spacing_flow_on_the_corpus_reports(tmp_path, prefect_server) -> None:
    from flows.cli import build_parser, spacing_parameters
    from flows.spacing import spacing

    out = tmp_path / "out"
    argv = ["spacing", "--out", str(out), "--runs-root", str(tmp_path / "runs")]
    argv += ["--steps", "500", "--chi-step", "250", "--seeds", "0", "--draws", "10"]
    args = build_parser().parse_args([*argv, "--eval-seqs", "64"])
    result = spacing(spacing_parameters(args))
    numbers = json.loads((out / "spacing.json").read_text())
    assert (out / "spacing.png").stat().st_size > 1000
    assert "## Retraining" in Path(result["report"]).read_text()
    conditions = {(r["condition"], r["seed"]) for r in numbers["results"]}
    assert conditions == {("baseline", 0), ("amplify", 0), ("suppress", 0)}
    # the chosen mode is the one whose unit loadings track whitespace targets most closely
    corr = {int(m): abs(c) for m, c in numbers["whitespace_correlation"].items()}
    assert numbers["mode"] == max(corr, key=corr.get)
