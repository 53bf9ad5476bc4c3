"""The end-to-end ``pipeline`` flow: train → χ at several checkpoints → modes → report.

Given a model of one's own (``params.model``, the spec the ``susceptibilities`` flow
takes), nothing is trained: χ at its checkpoints → modes → report (no training or
induction sections: the induction curve reads the built-in model's training run).
The patterning steps (intervention, retraining, comparison) plug in after the
decomposition when they land.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger

from flows.parameters import PipelineParameters, SusceptibilityParameters
from flows.runtime import file_digest
from flows.susceptibilities import susceptibilities
from patterning_core.workspace import patterning_home, settings_digest
from tasks.decomposition import decompose_checkpoint
from tasks.induction import induction_summary
from tasks.reporting import write_report
from tasks.training import train_model


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


@flow(name="pipeline")
def pipeline(params: PipelineParameters | None = None) -> dict:
    """Train, estimate χ (all heads, embed, unembed × probe tokens) at the chosen
    checkpoints, decompose it, and write a report with plots (fields and defaults:
    :class:`flows.parameters.PipelineParameters`, the demo's recipe); with ``model``, the
    same from the model's checkpoints without training.

    Returns a summary with the report path, the χ store and per-checkpoint numbers.
    """
    p = params or PipelineParameters()
    logger = get_run_logger()
    sampler = p.sampler
    home = patterning_home()
    training = induction = None
    if p.model is not None:
        workload, available = p.model.workload(), p.model.checkpoints()
        ckpts = choose_checkpoints(available, p.chi_steps([c["step"] for c in available]))
        digests = [file_digest(c["path"]) for c in ckpts]
        key = settings_digest([workload, sampler, ckpts, digests])
        settings = {"model": p.model.model_dump(exclude_none=True), "sampler": sampler}
    else:
        training = train_model(p.preset, p.data, p.train, str(home / "runs"))
        steps = [c["step"] for c in training["checkpoints"]]
        ckpts = choose_checkpoints(training["checkpoints"], p.chi_steps(steps))
        workload = {
            "kind": "transformer",
            "data": p.data,
            "sgld_seqs": p.sgld_seqs,
            "probe_seqs": p.probe_seqs,
        }
        key = settings_digest([training["run_dir"], workload, sampler, ckpts])
        settings = {
            "preset": p.preset,
            "data": p.data,
            "train": p.train,
            "sampler": sampler,
            "sgld_seqs": p.sgld_seqs,
            "probe_seqs": p.probe_seqs,
        }
    out = Path(p.out_dir) if p.out_dir else home / "pipeline" / key
    out.mkdir(parents=True, exist_ok=True)
    logger.info("χ at checkpoints %s into %s", [c["step"] for c in ckpts], out)
    chi_summary = susceptibilities(
        SusceptibilityParameters(
            store=str(out / "chi.zarr"),
            workload=workload,
            checkpoints=ckpts,
            sampler=sampler,
            dask_address=p.dask_address,
            n_workers=p.n_workers,
        )
    )
    decompositions = [
        decompose_checkpoint(str(out / "chi.zarr"), c["step"], str(out)) for c in ckpts
    ]
    if training is not None:
        induction = induction_summary(training["run_dir"], str(out))
    settings["checkpoints"] = [c["step"] for c in ckpts]
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
        "induction": (
            None
            if induction is None
            else {k: induction[k] for k in ("steps", "best", "formation_step")}
        ),
    }
