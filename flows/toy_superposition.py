"""The ``toy-superposition`` flow: demonstration 0, patterning the toy model of
superposition where the structure a seed learns is read off its weights exactly.

    χ at an early checkpoint of K baseline seeds           (susceptibilities)
      → χ, control and naive weights at every α            (intervention_weights)
      → baseline and every weighted condition, per chunk   (train_chunk × conditions × chunks)
      → SGLD linear response at the checkpoint             (linear_response)
      → χ re-estimated on the χ seeds retrained under the  (chi_after_retraining ×
        main conditions, at the checkpoint step and the end  conditions × 2 steps)
      → LLC of the commonest configurations                (configuration_llcs)
      → report.md, results.json, plots                     (write_report)

Every expensive task is memoized on its inputs and source, and every trained seed on its
own file (``tasks/toy_superposition.py``): a rerun trains nothing, a killed run resumes.

    patterning toy-superposition   # minutes on 2 cores; docs/results/toy_superposition
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.parameters import ToySuperpositionParameters
from patterning_core.experiments.toy_superposition.report import summarize
from patterning_core.workspace import patterning_home, settings_digest
from tasks.toy_superposition import (
    chi_after_retraining,
    configuration_llcs,
    intervention_weights,
    linear_response,
    susceptibilities,
    train_chunk,
    write_report,
)

TRIED_NOTE = """\
Before this design: Adam (lr 0.03, initialization std 0.5) decided a seed's configuration
within ~40 steps, mostly from its initialization (the norm at step 0 already predicts the
outcome with AUC 0.74); full-batch SGD with momentum and a small initialization was chosen
instead (see the setting). The first χ design (norm rows, checkpoint step 20 of 16 seeds,
nβ = 100, γ = 1000) met the targets at α = 0.5 in the development scan and was kept; the
linear-response check first compared against the χ the solver used and found the measured
change at ~0.5 of the prediction at every α, which the independent χ estimate traced to
selection bias (dh aligned with that estimate's noise). The first full run used α = 0.5 for
the main conditions: χ 74/100 against baseline 44/100 (+0.30, exactly the target), control
42/100, naive 69/100; the main α was then raised to 1.0 (α = 0.5 stays in the dose sweep,
its numbers are in the table above).

The (k+1)-gon target was tried in development scans (100 seeds each, not rerun by this
command) and failed. In this setting hexagons are rare (4/100 baseline seeds); χ weights
for dμ = +1 on every norm, or on the norms of features 4 and 5, at doses 0.07–0.21 left
the hexagon fraction at 2–4 %, as did their permutations. Sparser data (activation
probability 0.05) still gave only 8–12 % hexagons. With n = 5 features and activation
probability 0.2 (equal importances) baseline seeds split 55 % pentagons / 44 % squares,
but χ weights for dμ = +1 on every norm gave 52 %, 38 % and 58 % pentagons at doses 0.08,
0.15 and 0.29 (controls 56 %, 56 %, 40 %): raising every norm at the early checkpoint is
not a proxy for the polygon having room for one more vertex. Only the single-feature
target is demonstrated here."""


@flow(name="toy-superposition")
def toy_superposition(params: ToySuperpositionParameters | None = None) -> dict[str, Any]:
    """Run the demonstration (module docstring; fields and defaults:
    :class:`flows.parameters.ToySuperpositionParameters`) into ``params.out_dir`` (default
    ``$PATTERNING_HOME/toy_superposition/<digest of the parameters>``); returns the paths of
    the report and results and the headline numbers."""
    started = time.perf_counter()
    p = params or ToySuperpositionParameters()
    settings = p.model_dump(exclude={"out_dir"})
    logger = get_run_logger()
    key = settings_digest(settings)
    work = patterning_home() / "toy_superposition" / key
    out = Path(p.out_dir) if p.out_dir else work
    seeds = list(range(p.seeds))
    chunks = [seeds[i : i + p.chunk] for i in range(0, len(seeds), p.chunk)]
    chi_seeds = list(range(1000, 1000 + p.chi_seeds))  # disjoint from the retrained seeds

    chi = susceptibilities(p.toy, chi_seeds, p.chi_step, p.sampler, str(work / "chi"))
    weights = intervention_weights(p.toy, chi["chi_norm"], p.target, p.alphas(), p.control_seed)
    conditions: dict[str, list[float] | None] = {"baseline": None}
    conditions.update({k: v["weights"] for k, v in weights["conditions"].items()})
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, w in conditions.items():
        runs[name] = [
            record
            for part in chunks
            for record in train_chunk.with_options(name=f"train {name} seeds {part[0]}…")(
                p.toy, w, part, p.target
            )
        ]
        logger.info(
            "%s: %d/%d seeds represent feature %d",
            name,
            sum(r["reached"] for r in runs[name]),
            len(runs[name]),
            p.target,
        )
    response = linear_response(p.toy, chi, weights["dh"], p.target, p.response_alphas, p.sampler)[
        "points"
    ]
    after = []
    for name in ("baseline", "chi", "control", "naive"):
        w = None if name == "baseline" else conditions[f"{name}@{p.alpha:g}"]
        for step in (p.chi_step, p.toy_config().steps):
            file = work / "chi_after" / f"{name}_step{step}.nc"
            measured = chi_after_retraining.with_options(
                name=f"χ after retraining {name} step {step}",
                refresh_cache=not file.is_file(),  # never trust a record whose χ is gone
            )(p.toy, w, chi_seeds, step, p.sampler, str(file))
            after.append({"condition": name, "step": step, **measured})
    llc = configuration_llcs(p.toy, runs["baseline"], p.llc_per_configuration, p.llc_sampler)
    numbers = summarize(
        settings,
        runs,
        weights,
        response,
        llc,
        chi,
        after,
        time.perf_counter() - started,
        TRIED_NOTE,
    )
    paths = write_report(str(out), numbers, runs)
    logger.info("report %s", paths["report"])
    return {
        **paths,
        "conditions": numbers["conditions"],
        "targets": numbers["targets"],
        "wall_seconds": numbers["wall_seconds"],
    }
