"""The ``patterning`` command line: toy demo, χ inspection and export, argument errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from flows.cli import build_parser, main
from patterning_core.estimators.susceptibility import sample_susceptibility_stats
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import assemble_chi, create_store, write_shard
from patterning_core.store.workloads import build_workload


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "chi.zarr"
    work = build_workload({"kind": "toy-mlp", "n": 64, "d_in": 3, "hidden": 4, "probes": 3})
    cfg = SamplerConfig(
        step_size=1e-4, n_beta=20.0, localization=100.0, num_chains=2, num_draws=5, batch_size=8
    )
    create_store(
        path,
        checkpoints=[7],
        components=list(work.components),
        num_chains=2,
        num_draws=5,
        unit_coords={**work.unit_coords, "token_text": np.array(["x", " y", "(z"])},
        attrs={"sampler_config": cfg.to_json(), "n_beta": cfg.n_beta},
    )
    stats = sample_susceptibility_stats(
        work.loss_fn, work.params, work.data, work.probes, work.components, cfg
    )
    write_shard(path, 7, stats)
    assemble_chi(path, 7)
    return path


def test_chi_show(store, capsys):
    assert main(["chi", "show", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2 components, 3 units, 2 chains × 5 draws" in out
    assert "checkpoint 7: 6/6 shards complete; χ mean" in out


def test_chi_export_csv_and_netcdf(store, tmp_path):
    csv = tmp_path / "chi.csv"
    assert (
        main(
            [
                "chi",
                "export",
                str(store),
                "--format",
                "csv",
                "--out",
                str(csv),
                "--component",
                "readout",
            ]
        )
        == 0
    )
    table = pd.read_csv(csv)
    assert set(table.columns) >= {"checkpoint", "component", "unit", "chi", "token_text"}
    assert len(table) == 3 and set(table.component) == {"readout"}
    nc = tmp_path / "chi.nc"
    assert main(["chi", "export", str(store), "--format", "netcdf", "--out", str(nc)]) == 0
    with xr.open_dataset(nc) as ds:
        assert ds["chi"].dims == ("checkpoint", "component", "unit")
        np.testing.assert_allclose(ds["chi"].sel(component="readout").values[0], table.chi.values)
        assert list(ds["token_text"].values) == ["x", " y", "(z"]


def test_chi_show_and_export_several_stores(tmp_path, capsys):
    from tests.chi_stores import complete_store, unit_coords

    comps = ["L0H0", "L1H3"]
    base = complete_store(tmp_path / "base" / "chi.zarr", seed=0, components=comps)
    seed1 = complete_store(tmp_path / "seed1" / "chi.zarr", seed=1, components=comps[::-1])
    assert main(["chi", "show", str(base), str(seed1)]) == 0
    out = capsys.readouterr().out
    assert out.count("χ store") == 2
    assert "2 runs ['base', 'seed1']: 24 common probe units, 2 components" in out
    assert "checkpoint 3000: base: χ mean" in out and "correlation with base" in out

    csv = tmp_path / "runs.csv"
    argv = ["chi", "export", str(base), str(seed1), "--run", "baseline", "--run", "seed 1"]
    assert main([*argv, "--out", str(csv), "--checkpoint", "3000", "--component", "L1H3"]) == 0
    table = pd.read_csv(csv)
    assert set(table.columns) >= {"run", "checkpoint", "component", "unit", "chi", "token_text"}
    assert len(table) == 2 * 24 and set(table.run) == {"baseline", "seed 1"}
    for label, store in (("baseline", base), ("seed 1", seed1)):
        alone = xr.open_zarr(store, zarr_format=3, consolidated=False)
        want = alone["chi"].sel(checkpoint=3000, component="L1H3").values
        np.testing.assert_array_equal(table[table.run == label].chi.values, want)
    assert main(["chi", "export", str(base), str(seed1), "--format", "netcdf"]) == 0
    with xr.open_dataset(tmp_path / "base" / "chi-runs.nc") as ds:
        assert ds["chi"].dims == ("run", "checkpoint", "component", "unit")
        assert list(ds.run.values) == ["base", "seed1"]

    other = complete_store(
        tmp_path / "other" / "chi.zarr", components=comps, units=unit_coords(seed=5)
    )
    capsys.readouterr()
    assert main(["chi", "show", str(base), str(other)]) == 0  # each summary, then why not
    assert "runs not compared: runs 'base' and 'other' were computed on different" in (
        capsys.readouterr().out
    )
    assert main(["chi", "export", str(base), str(other), "--out", str(tmp_path / "x.csv")]) == 2
    assert "token_id differs at" in capsys.readouterr().err


def test_toy_demo_prints_known_answer(capsys):
    torch.set_num_threads(1)
    assert main(["toy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "exact posterior" in out and "susceptibilities χ" in out


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_run_flow_from_a_config_file(tmp_path, capsys, monkeypatch):
    """`patterning run susceptibilities --config FILE` against a harness server."""
    import json

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    config = {
        "store": str(tmp_path / "chi.zarr"),
        "workload": {"kind": "toy-mlp", "n": 64, "d_in": 3, "hidden": 4, "probes": 3},
        "checkpoints": [{"step": 0, "path": None}],
        "sampler": {
            "step_size": 1e-4,
            "n_beta": 20.0,
            "localization": 100.0,
            "num_chains": 2,
            "num_draws": 5,
            "batch_size": 8,
        },
    }
    path = tmp_path / "chi.json"
    path.write_text(json.dumps(config))
    with prefect_test_harness(server_startup_timeout=120):
        monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
        assert main(["run", "susceptibilities", "--config", str(path), "--workers", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["computed"] == 6 and len(summary["checkpoints"]) == 1
    assert main(["run", "pipeline", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml not found" in capsys.readouterr().err


def test_induce_options_override_the_config_file(tmp_path, capsys):
    """`patterning induce --config FILE --seeds …`: the file, then the flags; a bad file
    fails before anything starts (status 2, the field named)."""
    import json
    from pathlib import Path

    from flows.cli import induce_parameters

    config = Path(__file__).parents[2] / "docs" / "examples" / "induce.json"
    argv = ["induce", "--config", str(config), "--seeds", "4", "5"]
    argv += ["--report-dir", str(tmp_path / "report"), "--workers", "1"]
    params = induce_parameters(build_parser().parse_args(argv))
    in_file = json.loads(config.read_text())
    assert params.seeds == [4, 5] and params.report_dir == str(tmp_path / "report")
    assert params.out_dir == in_file["out_dir"] and params.sampler == in_file["sampler"]
    assert params.n_workers == 1 and params.retrain_without_mode is False
    flagged = build_parser().parse_args(["induce", "--retrain-without-mode"])
    assert induce_parameters(flagged).retrain_without_mode is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights_step": 12345}))
    assert main(["induce", "--config", str(bad)]) == 2
    assert "12345" in capsys.readouterr().err
