"""The pipeline's report, rendered from hand-built task results (no Prefect, no training)."""

from __future__ import annotations

from patterning_core.report.pipeline_report import pipeline_report, summary_rows

DECOMPOSITIONS = [
    {
        "step": 40,
        "explained_variance": [0.5, 0.25],
        "component_loadings": {1: {"L0H0": 0.1, "L1H0": -0.9}},
        "top_units": {1: [{"unit": 3, "token_text": "x", "pattern_class": "other"}]},
        "files": {"chi_png": "out/chi_step40.png", "modes_png": "out/modes_step40.png"},
    }
]
CHI = {
    "store": "out/chi.zarr",
    "computed": 8,
    "already_complete": 0,
    "checkpoints": [{"step": 40, "mean": -1.5e-3, "std": 2e-3}],
}


def test_summary_rows():
    assert summary_rows(DECOMPOSITIONS, CHI["checkpoints"]) == [
        {
            "checkpoint": 40,
            "χ mean": "-1.50e-03",
            "χ std": "2.00e-03",
            "PC1": "50.0%",
            "PC2": "25.0%",
            "PC3": "",
        }
    ]


def test_pipeline_report_sections_and_links():
    induction = {
        "steps": [0, 40],
        "best": [0.1, 0.35],
        "chance": 0.05,
        "threshold": 0.3,
        "formation_step": 40,
        "png": "out/prefix_matching.png",
    }
    training = {"run_dir": "runs/demo-abc", "checkpoints": [{"step": 0}, {"step": 40}]}
    report = pipeline_report("out", {"preset": "tiny"}, training, induction, CHI, DECOMPOSITIONS)
    lines = report.text.splitlines()
    assert report.rows == summary_rows(DECOMPOSITIONS, CHI["checkpoints"])
    table = lines.index("| checkpoint | χ mean | χ std | PC1 | PC2 | PC3 |")
    assert lines[table + 1 : table + 4] == [
        "|---|---|---|---|---|---|",
        "| 40 | -1.50e-03 | 2.00e-03 | 50.0% | 25.0% |  |",
        "",
    ]
    assert "Formation step: 40." in lines and "![prefix matching](prefix_matching.png)" in lines
    assert "![χ](chi_step40.png)" in lines
    assert "- PC1: components L1H0 -0.90, L0H0 +0.10; top units `x` (other)" in lines
    assert "Run directory `runs/demo-abc`, 2 checkpoints." in lines
