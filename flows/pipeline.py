"""The end-to-end ``pipeline`` flow: train → χ at several checkpoints → modes → report.

The patterning steps (intervention, retraining, comparison) plug in after the
decomposition when they land.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task

from flows.susceptibilities import susceptibilities
from patterning_core.experiments.induction.metrics import FORMATION_THRESHOLD, induction_curve
from patterning_core.report.plots import plot_prefix_matching
from patterning_core.sampling.sgld import ConfigError, SamplerConfig
from patterning_core.workspace import patterning_home, settings_digest
from tasks.decomposition import decompose_checkpoint
from tasks.reporting import write_report
from tasks.training import check_training_inputs, train_model

# The demo: the `demo` preset on synthetic in-context bigrams, where the canonical induction
# circuit forms at about step 2,250 with this recipe (see patterning_core/data/synthetic.py).
DEMO_DATA = {"source": "synthetic", "preset": "bench", "n_seqs": 20000, "seed": 0}
DEMO_TRAIN = {
    "steps": 3000,
    "batch_size": 32,
    "lr": 3e-3,
    "warmup_steps": 100,
    "seed": 0,
    "checkpoint_steps": [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750, 3000],
}
DEMO_CHI_CHECKPOINTS = [1000, 2000, 3000]
DEMO_SAMPLER = SamplerConfig(
    step_size=1e-3,
    n_beta=30.0,
    localization=300.0,
    num_chains=4,
    num_draws=100,
    num_burnin=0,
    steps_between_draws=1,
    batch_size=16,
    seed=0,
).to_dict()


def choose_checkpoints(checkpoints: list[dict], wanted: int | list[int]) -> list[dict]:
    """``wanted`` explicit steps, or that many checkpoints evenly spread (first and last in)."""
    by_step = {c["step"]: c for c in checkpoints}
    if isinstance(wanted, int):
        idx = np.unique(np.linspace(0, len(checkpoints) - 1, wanted).round().astype(int))
        return [checkpoints[i] for i in idx]
    missing = [s for s in wanted if s not in by_step]
    if missing:
        raise ValueError(f"no checkpoint at steps {missing}; available: {sorted(by_step)}.")
    return [by_step[s] for s in wanted]


def check_pipeline_parameters(
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    sampler: dict | None = None,
    chi_checkpoints: int | list[int] | None = None,
    sgld_seqs: int = 1024,
    probe_seqs: int = 8,
    **_runtime: object,
) -> None:
    """Check the pipeline's parameters before anything starts or is written; a bad one is
    a ``ConfigError`` naming it and the fix."""
    tc = check_training_inputs(preset, data or DEMO_DATA, train or DEMO_TRAIN)
    SamplerConfig.from_dict(sampler or DEMO_SAMPLER)
    for name, value in (("sgld_seqs", sgld_seqs), ("probe_seqs", probe_seqs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")
    wanted = DEMO_CHI_CHECKPOINTS if chi_checkpoints is None else chi_checkpoints
    schedule = tc.schedule()
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if wanted < 1:
            raise ConfigError(f"chi_checkpoints must be >= 1 (a count), got {wanted}.")
        return
    missing = [s for s in wanted if s not in schedule]
    if missing:
        raise ConfigError(
            f"chi_checkpoints: training saves no checkpoint at steps {missing} (it saves "
            f"{schedule}); pick steps from those, or give a count."
        )


@task(name="induction-curve")
def induction_summary(run_dir: str, out_dir: str) -> dict | None:
    """Prefix-matching scores over the run's checkpoints, with a plot."""
    curve = induction_curve(run_dir)
    png = plot_prefix_matching(
        curve.steps,
        curve.best,
        Path(out_dir) / "prefix_matching.png",
        threshold=curve.threshold,
        chance=curve.chance,
    )
    return {
        "steps": curve.steps,
        "best": curve.best,
        "chance": curve.chance,
        "threshold": FORMATION_THRESHOLD,
        "formation_step": curve.formation_step,
        "png": str(png),
    }


@flow(name="pipeline")
def pipeline(
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    sampler: dict | None = None,
    chi_checkpoints: int | list[int] | None = None,
    sgld_seqs: int = 1024,
    probe_seqs: int = 8,
    out_dir: str | None = None,
    dask_address: str | None = None,
    n_workers: int = 2,
) -> dict:
    """Train ``preset``, estimate χ (all heads, embed, unembed × probe tokens) at
    ``chi_checkpoints``, decompose it, and write a report with plots.

    Returns a summary with the report path, the χ store and per-checkpoint numbers.
    """
    check_pipeline_parameters(preset, data, train, sampler, chi_checkpoints, sgld_seqs, probe_seqs)
    logger = get_run_logger()
    data = data or DEMO_DATA
    train = train or DEMO_TRAIN
    sampler = sampler or DEMO_SAMPLER
    chi_checkpoints = DEMO_CHI_CHECKPOINTS if chi_checkpoints is None else chi_checkpoints
    home = patterning_home()
    training = train_model(preset, data, train, str(home / "runs"))
    ckpts = choose_checkpoints(training["checkpoints"], chi_checkpoints)
    workload = {
        "kind": "transformer",
        "data": data,
        "sgld_seqs": sgld_seqs,
        "probe_seqs": probe_seqs,
    }
    key = settings_digest([training["run_dir"], workload, sampler, ckpts])
    out = Path(out_dir) if out_dir else home / "pipeline" / key
    out.mkdir(parents=True, exist_ok=True)
    logger.info("χ at checkpoints %s into %s", [c["step"] for c in ckpts], out)
    chi_summary = susceptibilities(
        str(out / "chi.zarr"),
        workload,
        ckpts,
        sampler,
        dask_address=dask_address,
        n_workers=n_workers,
    )
    decompositions = [
        decompose_checkpoint(str(out / "chi.zarr"), c["step"], str(out)) for c in ckpts
    ]
    induction = induction_summary(training["run_dir"], str(out))
    settings = {
        "preset": preset,
        "data": data,
        "train": train,
        "sampler": sampler,
        "checkpoints": [c["step"] for c in ckpts],
        "sgld_seqs": sgld_seqs,
        "probe_seqs": probe_seqs,
    }
    report = write_report(str(out), settings, training, induction, chi_summary, decompositions)
    return {
        "report": report,
        "store": chi_summary["store"],
        "out_dir": str(out),
        "computed_shards": chi_summary["computed"],
        "already_complete": chi_summary["already_complete"],
        "checkpoints": [
            {
                "step": d["step"],
                "explained_variance": d["explained_variance"][:3],
                **{k: v for k, v in s.items() if k != "step"},
            }
            for d, s in zip(decompositions, chi_summary["checkpoints"], strict=True)
        ],
        "induction": {k: induction[k] for k in ("steps", "best", "formation_step")},
    }
