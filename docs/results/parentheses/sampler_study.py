"""The sampler study of diagnosis.md §3b: the lever's baseline run and its temperature check
at one reference solution, for several sampler settings.

    python docs/results/parentheses/sampler_study.py SEED '{"NAME": {SAMPLER CHANGES}, ...}'

Each NAME's changes are ``SamplerConfig`` fields (``step_size``, ``num_burnin``,
``steps_between_draws``, ``batch_size``, ``localization``, ``preconditioner``, …) plus
``chains``, the number of check chains (2 direction chains always). The rows of §3b:

    '{"default": {}}'
    '{"b256": {"batch_size": 256, "chains": 6}}'
    '{"g1000_e1e-4": {"localization": 1000.0, "step_size": 0.0001, "chains": 6}}'
    '{"rms": {"preconditioner": "rmsprop", "chains": 6}}'
    '{"e1e-4_long": {"step_size": 0.0001, "num_burnin": 1500, "steps_between_draws": 40,
                     "chains": 4}}'
    '{"e2.5e-5_long": {"step_size": 0.000025, "num_burnin": 6000,
                       "steps_between_draws": 160, "chains": 4}}'
    '{"e1.25e-5_long": {"step_size": 0.0000125, "num_burnin": 12000,
                        "steps_between_draws": 320, "chains": 4}}'

At seed 1 (the Equal-Count solution of pair 0, where the lever's step failed: diagnosis.md
§6), with SEED = 1:

    '{"e2.5e-5_g1000": {"step_size": 0.000025, "num_burnin": 6000,
                        "steps_between_draws": 160, "localization": 1000.0, "chains": 4}}'
    '{"e1.25e-5_long": {"step_size": 0.0000125, "num_burnin": 12000,
                        "steps_between_draws": 320, "chains": 4}}'

The solution is trained again from its seed (deterministic, ~30 s).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from patterning_core.experiments.parentheses import lever, steps
from patterning_core.experiments.parentheses.config import ExperimentConfig
from patterning_core.experiments.parentheses.steps import make_loss_fn

BASELINE_KEYS = ("mean_loss", "llc", "llc_se", "fluctuation_ratio", "drift", "drift_se")


def main(seed: int, variants: dict[str, dict]) -> None:
    torch.set_num_threads(1)
    cfg = ExperimentConfig()
    setup = steps.prepare(cfg.data)
    record, params = steps.train_seed(setup, cfg.model, cfg.train, seed)
    print("solution", json.dumps(record), flush=True)
    loss_fn = make_loss_fn(cfg.model)
    for name, changes in variants.items():
        changes = dict(changes)
        check = int(changes.pop("chains", 8))
        lev = cfg.lever.replace(direction_chains=2, check_chains=check)
        lev = lev.replace(sampler=lev.sampler.replace(**changes))
        start = time.perf_counter()
        base = lever.baseline_run(loss_fn, params, setup.data, lev)
        row = {k: round(base[k], 4) for k in (*BASELINE_KEYS, "init_loss", "rhat")}
        print(name, "baseline", json.dumps(row), f"{time.perf_counter() - start:.0f} s", flush=True)
        temp = lever.temperature_check(loss_fn, params, setup.data, lev, base)
        keys = ("predicted", "measured", "measured_se", "lambda_fixed")
        print(name, "temperature", json.dumps({k: round(temp[k], 4) for k in keys}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
