"""The ``parentheses`` flow end to end at tiny size: the same numbers as the plain driver,
one cached task per seed (a failed run resumes per seed), parameters refused early."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.testing.utilities import prefect_test_harness

from flows.cli import main as cli_main
from flows.parentheses import ParenthesesParameters, parentheses
from patterning_core.experiments.parentheses import steps
from patterning_core.experiments.parentheses.steps import run_experiment

QUICK = ParenthesesParameters(quick=True, seeds=4, analyzed_per_rule=1, retrain="always")


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def trained(monkeypatch) -> list[tuple[str, int]]:
    """``(condition, seed)`` of every seed trained (not read from the cache) from now on."""
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()
    original = steps.train_seed

    def counting(setup, model, train, seed, weights=None):
        out = original(setup, model, train, seed, weights)
        with lock:
            calls.append((steps.BASELINE if weights is None else steps.WEIGHTED, seed))
        return out

    monkeypatch.setattr(steps, "train_seed", counting)
    return calls


def _numbers(result: dict) -> dict:
    """The result without the units' compute times and the command that wrote it."""
    if isinstance(result, dict):
        skip = ("seconds", "timing_s", "command")
        return {k: _numbers(v) for k, v in result.items() if k not in skip}
    if isinstance(result, list):
        return [_numbers(v) for v in result]
    return result


def test_flow_gives_the_drivers_numbers_and_a_rerun_trains_nothing(
    harness, tmp_path: Path, trained
) -> None:
    out = tmp_path / "paren"
    first = parentheses(QUICK, str(out))
    report = Path(first["report"])
    assert report.is_file() and (out / "results.json").is_file()
    plots = {"ood_hist.png", "linear_check.png", "weights.png"}
    assert {p.name for p in out.glob("*.png")} == plots
    assert "fraction nested" in report.read_text() and "## The lever at fixed solutions" in (
        report.read_text()
    )
    assert "Written by the `parentheses` flow, run as `" in report.read_text()
    for before_after in (first["nested"], first["equal_count"]):
        assert len(before_after) == 2 and all(0 <= k <= QUICK.seeds for k in before_after)
    result = json.loads((out / "results.json").read_text())
    assert [(r["alpha"], r["pair"]) for r in result["linear_check"]] == [(0.1, 0)]
    assert result["alpha_fixed_before_retraining"] and result["retrained"]
    assert result["command"]
    expected = json.loads(json.dumps(run_experiment(QUICK.experiment_config())))
    assert _numbers(result) == _numbers(expected)

    trained.clear()
    second = parentheses(QUICK.model_dump(), str(out))  # a dict is validated into the model
    assert trained == [], "every seed came from the cache"
    assert json.dumps(second, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert json.loads((out / "results.json").read_text()) == result


def test_a_failed_run_resumes_per_seed(harness, tmp_path: Path, trained, monkeypatch) -> None:
    """Retraining seed 2 with the weights fails (a stand-in for a killed run); the next run
    trains only the seeds that had not finished, each once."""
    params = QUICK.model_copy(update={"alpha": 0.4})  # weights of its own: a fresh cache
    counting = steps.train_seed

    def failing(setup, model, train, seed, weights=None):
        if weights is not None and seed == 2:
            raise RuntimeError("killed")
        return counting(setup, model, train, seed, weights)

    monkeypatch.setattr(steps, "train_seed", failing)
    with pytest.raises(RuntimeError, match="killed"):
        parentheses(params, str(tmp_path / "paren"))
    first = list(trained)
    assert (steps.WEIGHTED, 2) not in first

    trained.clear()
    monkeypatch.setattr(steps, "train_seed", counting)
    summary = parentheses(params, str(tmp_path / "paren"))
    second = list(trained)
    assert Path(summary["report"]).is_file()
    assert (steps.WEIGHTED, 2) in second
    assert not set(first) & set(second), "a seed finished before was trained again"
    assert all(condition == steps.WEIGHTED for condition, _ in second)
    everything = {(c, s) for c in (steps.BASELINE, steps.WEIGHTED) for s in range(params.seeds)}
    assert set(first) | set(second) <= everything and len(first) + len(second) <= len(everything)
    assert {(steps.WEIGHTED, s) for s in range(params.seeds)} <= set(first) | set(second)


def test_the_flow_refuses_bad_parameters(harness, tmp_path: Path, trained) -> None:
    for bad in ({"seeds": 1}, {"floor": 0.0}, {"alpha": 1.0}, {"retrain": "maybe"}):
        with pytest.raises(ParameterTypeError):
            parentheses(bad, str(tmp_path / "x"))
    assert trained == [] and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--seeds", "1"], "seeds"),
        (["--floor", "1.5"], "floor"),
        (["--alpha", "1.5"], "alpha"),
        (["--threshold", "0.5"], "threshold"),
        (["--analyzed-per-rule", "0"], "analyzed_per_rule"),
    ],
)
def test_cli_refuses_bad_parameters_before_a_server_starts(
    argv, field, tmp_path: Path, capsys, monkeypatch
) -> None:
    import flows.server

    def no_server():
        raise AssertionError("a server was started")

    monkeypatch.setattr(flows.server, "prefect_api", no_server)
    code = cli_main(["parentheses", *argv, "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("patterning: error: invalid ParenthesesParameters:")
    assert f"{field} = " in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_published_run_reproduces(harness, tmp_path: Path) -> None:
    """The flow at the settings of ``docs/results/parentheses/results.json`` gives its
    numbers again (every unit is seeded; compute times aside), and those numbers say what
    the report says: 8 reference solutions of each rule, the check at every α of every
    lever pair, predictions linear in α, and no retraining unless the gate passed."""
    published = json.loads(
        (Path(__file__).parents[2] / "docs/results/parentheses/results.json").read_text()
    )
    cfg = published["config"]
    params = ParenthesesParameters(lever_pairs=cfg["lever_pairs"] or 0, retrain=cfg["retrain"])
    parentheses(params, str(tmp_path / "paren"))
    result = json.loads((tmp_path / "paren" / "results.json").read_text())
    assert _numbers(result) == _numbers(published)
    assert result["reference_solutions"] == {"nested": 8, "equal_count": 8}
    alphas = cfg["lever"]["alphas"]
    pairs = result["lever_solutions"]["nested"]
    assert sorted((r["alpha"], r["pair"]) for r in result["linear_check"]) == sorted(
        (a, p) for a in alphas for p in range(pairs)
    )
    for p in range(pairs):
        rows = sorted(
            (r for r in result["linear_check"] if r["pair"] == p), key=lambda r: r["alpha"]
        )
        for r in rows:
            assert r["predicted"] / r["alpha"] == pytest.approx(
                rows[0]["predicted"] / rows[0]["alpha"], rel=1e-6
            )
    assert result["retrained"] == (result["gate"]["passes"] or cfg["retrain"] == "always")
