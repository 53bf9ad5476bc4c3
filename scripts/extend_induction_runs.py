"""Continue the runs of one condition of an induction-patterning experiment to more steps.

    python scripts/extend_induction_runs.py --results <out_dir>/results.json \
        --condition repress --steps 4500

A 3,000-step run cannot show that Repress delays formation to ≥ 2× a baseline that forms at
2,250. Each run of ``--condition`` is copied into the folder of the same settings with
``--steps`` steps (``training.copy_run_prefix``) and resumed there, which continues it
exactly as an uninterrupted longer run would (checkpoints keep their spacing). Writes
``extension_<condition>_<steps>.md`` and ``.json`` beside ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from flows.retraining import retrain_all
from flows.runtime import make_task_runner
from flows.server import prefect_api
from patterning_core.experiments.induction.report import run_rows
from patterning_core.model.training import copy_run_prefix
from patterning_core.report.markdown import markdown_table
from tasks.retraining import UNIFORM, weighted_run_dir


def longer(train: dict, steps: int) -> dict:
    """``train`` with ``steps`` steps and its checkpoint spacing continued to them."""
    ckpts = sorted(train["checkpoint_steps"])
    spacing = ckpts[-1] - ckpts[-2]
    extra = range(ckpts[-1] + spacing, steps + 1, spacing)
    return {**train, "steps": steps, "checkpoint_steps": [*ckpts, *extra]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="results.json of an experiment")
    p.add_argument("--condition", default="repress")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = json.loads(Path(args.results).read_text())
    settings = results["settings"]
    weights = results["weights"]["files"].get(args.condition)
    jobs = []
    for run in (r for r in results["runs"] if r["condition"] == args.condition):
        train = longer({**settings["train"], "seed": run["seed"]}, args.steps)
        digest = weights["digest"] if weights else UNIFORM
        target = weighted_run_dir(
            settings["runs_root"], settings["preset"], settings["data"], train, digest
        )
        copy_run_prefix(target, run["run_dir"])
        jobs.append(
            {
                "preset": settings["preset"],
                "data": settings["data"],
                "train_settings": train,
                "weights_path": weights["path"] if weights else None,
                "weights_digest": digest,
                "runs_root": settings["runs_root"],
                "threads": 1,
                "label": f"{args.condition} seed {run['seed']} ({args.steps} steps)",
            }
        )
    with prefect_api():
        runner = make_task_runner(None, args.workers, 1)
        out = retrain_all.with_options(task_runner=runner)(jobs)
    extended = [{**r, "condition": args.condition} for r in out]
    base = [r for r in results["runs"] if r["condition"] == "baseline"]
    rows = run_rows(base + extended, args.steps)
    folder = Path(args.results).parent
    stem = f"extension_{args.condition}_{args.steps}"
    lines = [
        f"# {args.condition} continued to {args.steps} steps",
        "",
        "Each run resumed from its 3,000-step checkpoint (same weights, seed and data "
        "order); ratios to the 3,000-step baselines.",
        "",
        *markdown_table(rows),
        "",
        *(f"- {r['label']}: `{r['run_dir']}`" for r in extended),
        "",
    ]
    (folder / f"{stem}.md").write_text("\n".join(lines))
    (folder / f"{stem}.json").write_text(json.dumps(extended, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
