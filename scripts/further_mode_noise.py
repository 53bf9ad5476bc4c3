"""The SGLD noise of the spacing-fin flow's readings: one model's χ estimated twice (two
SGLD seeds), read as the flow reads every retrained run.

    .venv/bin/python scripts/further_mode_noise.py --preset demo_long \\
        --results docs/results/spacing/fin_long/results.json \\
        --first .patterning/spacing_fin/long_fin/chi.zarr:3000 \\
        --second .patterning/fin_explore/long_chi_3000_sampler1.zarr:3000 \\
        --out docs/results/spacing/fin_long/sampler_noise

``--first`` and ``--second``: ``STORE:STEP`` of the same checkpoint and probe units with two
SGLD seeds; ``--results``: the flow's ``results.json`` (its further mode's plan: the class
and the predicted shift nβ·χ·dh). Per estimate: the fin metric, the class's separation
(``further_mode.separation_of``); between the two: the difference of each, and the
difference of the components' localized losses ⟨φ_C⟩ projected on the predicted shift,
beside the standard error the chains give it (``induction.loop.along_direction``). A
retrained run's change read off one χ estimate carries this noise on top of the baseline's.

Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.experiments.induction.loop import along_direction, localized_loss
from patterning_core.experiments.spacing.fin_store import fin_at, probe_tokens
from patterning_core.experiments.spacing.further_mode import class_labels, separation_of
from patterning_core.model.transformer import preset
from patterning_core.store.chi_store import chi_at, read_stats


def parse_location(text: str) -> tuple[str, int]:
    """``STORE:STEP`` → ``(store, step)``."""
    store, _, step = text.rpartition(":")
    if not store or not step.isdigit():
        raise SystemExit(f"expected STORE:STEP, got {text!r}")
    return store, int(step)


def reading(store: str, step: int, config, pattern_class: str) -> dict:
    """The flow's readings of one χ estimate."""
    chi, _, ds = chi_at(store, step)
    probes, strings = probe_tokens(json.loads(ds.attrs["workload"]), config)
    phi, se = localized_loss(read_stats(store, step), step)
    return {
        "fin_metric": fin_at(store, step, config)["metric"],
        "separation": separation_of(chi, class_labels(probes, strings).ravel(), pattern_class),
        "components": [str(c) for c in chi.component.values],
        "phi": phi,
        "phi_se": se,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--first", required=True)
    parser.add_argument("--second", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    plan = json.loads(Path(args.results).read_text())["further_mode"]["plan"]
    config = preset(args.preset)
    cls = plan["pattern_class"]
    a, b = (reading(*parse_location(x), config, cls) for x in (args.first, args.second))
    if a["components"] != b["components"] or a["components"] != plan["components"]:
        raise SystemExit("the two stores and the plan must hold the same components")
    value, se = along_direction(
        b["phi"] - a["phi"], np.hypot(a["phi_se"], b["phi_se"]), plan["predicted_shift"]
    )
    numbers = {
        "command": " ".join(shlex.quote(x) for x in ["python", *sys.argv]),
        "pattern_class": cls,
        "fin_metric": [a["fin_metric"], b["fin_metric"]],
        "separation": [a["separation"], b["separation"]],
        "separation_difference": b["separation"]["separation"] - a["separation"]["separation"],
        "fin_metric_difference": b["fin_metric"] - a["fin_metric"],
        "phi_along_prediction_difference": value,
        "phi_along_prediction_se": se,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=1, default=float))
    sep = [f"{r['separation']:.3f} (mode {r['mode']})" for r in numbers["separation"]]
    text = "\n".join(
        [
            "# SGLD noise of the spacing-fin readings",
            "",
            f"`{numbers['command']}`",
            "",
            "One checkpoint's χ estimated with two SGLD seeds, read as the flow reads a run.",
            "",
            "| reading | first seed | second seed | difference |",
            "|---|---:|---:|---:|",
            f"| fin metric | {a['fin_metric']:.3f} | {b['fin_metric']:.3f} | "
            f"{numbers['fin_metric_difference']:+.3f} |",
            f"| `{cls}` separation | {sep[0]} | {sep[1]} | "
            f"{numbers['separation_difference']:+.3f} |",
            f"| ⟨φ⟩ along the predicted shift | | | {value:+.4f} (chains' SE {se:.4f}) |",
            "",
        ]
    )
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
