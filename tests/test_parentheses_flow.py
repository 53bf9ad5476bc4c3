"""The ``parentheses`` flow end to end at tiny size, memoized on its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.cli import main as cli_main
from flows.parentheses import parentheses

QUICK = {"quick": True, "seeds": 4, "analyzed_per_rule": 1, "no_linear_check": True}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_writes_report_and_a_rerun_reuses_it(harness, tmp_path: Path) -> None:
    out = tmp_path / "paren"
    first = parentheses(QUICK, str(out))
    report = Path(first["report"])
    assert report.is_file() and (out / "result.json").is_file()
    assert "fraction nested" in report.read_text()
    for before_after in (first["fraction_nested"], first["fraction_equal_count"]):
        assert len(before_after) == 2 and all(0.0 <= f <= 1.0 for f in before_after)
    stamp = (out / "result.json").stat().st_mtime_ns
    second = parentheses(QUICK, str(out))
    assert json.dumps(second, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert (out / "result.json").stat().st_mtime_ns == stamp  # nothing recomputed


def test_cli_refuses_bad_settings_before_running(tmp_path: Path, capsys) -> None:
    code = cli_main(["parentheses", "--seeds", "1", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "seeds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
