"""The ``patterning`` command line.

patterning demo        LLC and susceptibilities on bundled toy models, with known answers
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from patterning_core import known_answers as ka
from patterning_core.llc import estimate_llc
from patterning_core.sampling import SamplerConfig
from patterning_core.susceptibility import estimate_susceptibilities
from patterning_core.toy_models import make_linear_regression, make_mlp_regression


def run_demo(args: argparse.Namespace) -> int:
    """LLC against a closed form, then LLC and χ of a small MLP."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # toy models: one thread is fastest
    progress = None if not args.quiet else False
    started = time.perf_counter()

    print("1. LLC of linear regression (Gaussian posterior, exact answer known)")
    loss_fn, params, data = make_linear_regression(n=100, d=3)
    eps, n_beta, gamma, chains = 2e-3, 10.0, 1.0, 16
    cfg = SamplerConfig(
        step_size=eps,
        n_beta=n_beta,
        localization=gamma,
        num_chains=chains,
        num_draws=4000,
        num_burnin=1000,
        batch_size=None,
    )
    X, y, w = data[0].numpy(), data[1].numpy(), params["w"].numpy()
    loss = ka.mean_squared_residual(X, y, w)
    exact = n_beta * 0.5 * np.trace(loss.A @ ka.localized_gaussian(loss, n_beta, gamma).cov)
    chain_law = ka.localized_gaussian(loss, n_beta, gamma, step_size=eps).cov
    discretized = n_beta * 0.5 * np.trace(loss.A @ chain_law)
    result = estimate_llc(loss_fn, params, data, cfg, progress=progress)
    print(
        f"   estimate {result.mean:.3f} ± {result.std / np.sqrt(chains):.3f} (SE)   "
        f"exact posterior {exact:.3f}   stationary law of the ε={eps:g} chain "
        f"{discretized:.3f}   R̂ {result.rhat:.3f}\n"
    )

    print("2. A one-hidden-layer MLP fitted to a smooth target")
    loss_fn, params, data = make_mlp_regression()
    cfg = SamplerConfig(
        step_size=3e-4,
        n_beta=50.0,
        localization=100.0,
        num_chains=8,
        num_draws=1000,
        num_burnin=500,
        batch_size=64,
    )
    result = estimate_llc(loss_fn, params, data, cfg, progress=progress)
    print(f"   {result}")
    if result.rhat > 1.1:
        print("   warning: R̂ > 1.1, the chains disagree; raise num_burnin or num_draws.")
    components = {
        "hidden": {
            "w1": torch.ones_like(params["w1"], dtype=torch.bool),
            "b1": torch.ones_like(params["b1"], dtype=torch.bool),
        },
        "readout": {
            "w2": torch.ones_like(params["w2"], dtype=torch.bool),
            "b2": torch.ones_like(params["b2"], dtype=torch.bool),
        },
    }
    probes = tuple(t[:8] for t in data)
    chi = estimate_susceptibilities(
        loss_fn, params, data, probes, components, cfg, progress=progress
    )
    print(
        "   susceptibilities χ (component × probe example; no nβ factor, "
        "χ > 0: up-weighting the example raises the component's loss)"
    )
    header = "   " + "component".ljust(10) + "".join(f"{int(u):>9}" for u in chi.unit.values)
    print(header)
    for name in chi.component.values:
        row = chi.sel(component=name).values
        print("   " + str(name).ljust(10) + "".join(f"{v:9.4f}" for v in row))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patterning",
        description="Susceptibilities and patterning: read and write a network's structure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="LLC and χ on bundled toy models, with known answers")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
