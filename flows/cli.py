"""The ``patterning`` command line.

patterning demo                     the end-to-end pipeline on the demo preset
patterning toy                      LLC and χ on toy models with known answers (seconds)
patterning run FLOW --config FILE   run a flow (train, susceptibilities, decompose, pipeline)
patterning server start|stop|status a local Prefect server and Dask cluster (127.0.0.1)
patterning chi show PATH            summary of a χ store
patterning chi export PATH ...      a selection of χ as CSV or netCDF
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from patterning_core.estimators.llc import estimate_llc
from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.sampling.sgld import ConfigError, SamplerConfig
from patterning_core.toys import known_answers as ka
from patterning_core.toys.models import make_linear_regression, make_mlp_regression

FLOWS = ("train", "susceptibilities", "decompose", "pipeline")


# ----------------------------------------------------------------------------- toy


def run_toy(args: argparse.Namespace) -> int:
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
    ones = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    components = {
        "hidden": {"w1": ones["w1"], "b1": ones["b1"]},
        "readout": {"w2": ones["w2"], "b2": ones["b2"]},
    }
    probes = tuple(t[:8] for t in data)
    chi = estimate_susceptibilities(
        loss_fn, params, data, probes, components, cfg, progress=progress
    )
    print(
        "   susceptibilities χ (component × probe example; no nβ factor, "
        "χ > 0: up-weighting the example raises the component's loss)"
    )
    print("   " + "component".ljust(10) + "".join(f"{int(u):>9}" for u in chi.unit.values))
    for name in chi.component.values:
        row = chi.sel(component=name).values
        print("   " + str(name).ljust(10) + "".join(f"{v:9.4f}" for v in row))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


# ----------------------------------------------------------------------------- flows


class StoreProgress:
    """A progress bar of completed (component, chain) runs, read from the χ store while a
    flow runs (a shard holds one or several of them)."""

    def __init__(self, store: Path, enabled: bool):
        self.store, self.enabled = store, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StoreProgress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        from tqdm.auto import tqdm

        from patterning_core.store.chi_store import completed, open_chi

        bar = None
        while not self._stop.wait(1.0):
            try:
                ds = open_chi(self.store)
                states = [completed(self.store, int(c)) for c in ds.checkpoint.values]
            except Exception:  # not created yet, or mid-write
                continue
            done = sum(int(s["restricted"].sum() + s["full"].sum()) for s in states)
            total = sum(s["restricted"].size + s["full"].size for s in states)
            if bar is None:
                bar = tqdm(total=total, desc="χ component × chain runs", unit="run")
            bar.n = done
            bar.refresh()
        if bar is not None:
            bar.close()


def _runtime(args: argparse.Namespace) -> dict:
    """Dask address: the flag, else a cluster started by ``patterning server start``."""
    from flows.server import status

    address = getattr(args, "dask_address", None)
    if not address:
        state = status()
        if state.get("dask_ok"):
            address = state["dask_address"]
    return {"dask_address": address, "n_workers": getattr(args, "workers", 2)}


def run_demo(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.pipeline import pipeline
    from flows.server import prefect_api
    from patterning_core.workspace import patterning_home

    out = Path(args.out) if args.out else patterning_home() / "demo"
    started = time.perf_counter()
    with prefect_api() as api, StoreProgress(out / "chi.zarr", not args.quiet):
        print(f"Prefect API {api}; results in {out}")
        summary = run_tracked(pipeline, preset="demo", out_dir=str(out), **_runtime(args))
    print_pipeline_summary(summary, time.perf_counter() - started)
    return 0


def print_pipeline_summary(summary: dict, seconds: float) -> None:
    print("\n checkpoint │ PC1     PC2     PC3   │ χ mean      χ std     │ best L1 PMS")
    print("────────────┼───────────────────────┼───────────────────────┼────────────")
    pms = dict(zip(summary["induction"]["steps"], summary["induction"]["best"], strict=True))
    for row in summary["checkpoints"]:
        ev = row["explained_variance"] + [float("nan")] * 3
        print(
            f" {row['step']:>10} │ {ev[0]:6.1%}  {ev[1]:6.1%}  {ev[2]:6.1%} │ "
            f"{row['mean']:+.3e}  {row['std']:.3e} │ {pms.get(row['step'], float('nan')):.3f}"
        )
    formed = summary["induction"]["formation_step"]
    print(f"\ninduction formation step: {formed if formed is not None else 'not formed'}")
    print(
        f"shards computed {summary['computed_shards']}, already complete "
        f"{summary['already_complete']}; χ store {summary['store']}"
    )
    print(f"report: {summary['report']}\ndone in {seconds:.0f} s")


def load_config(path: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"config file {path} not found; give a JSON or YAML file of the flow's parameters."
        )
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def flow_function(name: str):  # -> prefect.Flow
    """The flow ``name`` (one of ``FLOWS``)."""
    if name == "train":
        from flows.train import train_flow as fn
    elif name == "susceptibilities":
        from flows.susceptibilities import susceptibilities as fn
    elif name == "decompose":
        from flows.decompose import decompose_flow as fn
    else:
        from flows.pipeline import pipeline as fn
    return fn


def check_flow_config(name: str, config: object) -> None:
    """Validate a flow's parameters before any server starts or anything is written: a
    ``ConfigError`` (or ``FileNotFoundError``) naming the problem and the fix."""
    import inspect

    from patterning_core.sampling.sgld import ConfigError

    if not isinstance(config, dict):
        raise ConfigError(f"the config file must hold a mapping of parameters, got {config!r}.")
    signature = inspect.signature(flow_function(name).fn)
    try:
        bound = signature.bind(**config)
    except TypeError as err:
        raise ConfigError(
            f"flow {name!r}: {err}; its parameters are {list(signature.parameters)}."
        ) from None
    bound.apply_defaults()
    if name == "train":
        from flows.train import check_train_parameters as check
    elif name == "susceptibilities":
        from flows.susceptibilities import check_susceptibility_parameters as check
    elif name == "pipeline":
        from flows.pipeline import check_pipeline_parameters as check
    else:
        return
    check(**bound.arguments)


def run_flow(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.server import prefect_api

    config = load_config(args.config) if args.config else {}
    check_flow_config(args.flow, config)  # before a server starts or anything is written
    fn = flow_function(args.flow)
    if args.flow in ("susceptibilities", "pipeline"):
        config = {**_runtime(args), **config}
    with prefect_api():
        result = run_tracked(fn, **config)
    if args.flow == "pipeline":
        print_pipeline_summary(result, 0.0)
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- server, chi


def run_server(args: argparse.Namespace) -> int:
    from flows.server import print_status, print_stop, start_services

    if args.action == "start":
        state = start_services(n_workers=args.workers, with_dask=not args.no_dask)
        print(f"Prefect UI   {state.get('ui_url')}\nPrefect API  {state.get('api_url')}")
        if state.get("dask_ok"):
            print(f"Dask         {state.get('dask_address')}")
        print(f"\nexport PREFECT_API_URL={state.get('api_url')}")
    elif args.action == "stop":
        print_stop()
    else:
        print_status()
    return 0


def run_chi(args: argparse.Namespace) -> int:
    from patterning_core.store.chi_store import store_summary
    from patterning_core.store.export import export_chi

    if args.action == "show":
        print(store_summary(args.path))
        return 0
    out = args.out or str(Path(args.path).with_suffix(".csv" if args.format == "csv" else ".nc"))
    path = export_chi(args.path, out, args.format, args.checkpoint, args.component)
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- demonstrations


def run_induce(args: argparse.Namespace) -> int:
    from flows.induction_patterning import main_cli

    return main_cli(args)


def run_spacing(args: argparse.Namespace) -> int:
    from flows.spacing import main_cli

    return main_cli(args)


def run_parentheses(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.parentheses import check_parentheses_parameters, parentheses
    from flows.server import prefect_api
    from tasks.parentheses import settings_from_args

    settings = settings_from_args(args)
    try:
        check_parentheses_parameters(settings)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    with prefect_api():
        summary = run_tracked(parentheses, settings, args.out)
    nested, equal = summary["fraction_nested"], summary["fraction_equal_count"]
    print(
        f"fraction Nested {nested[0]:.2f} -> {nested[1]:.2f}; Equal-Count {equal[0]:.2f} -> "
        f"{equal[1]:.2f}; paired shift toward Equal-Count {summary['paired_shift']:+.3f} "
        f"(sign test p = {summary['sign_test_p']:.3g})\nreport: {summary['report']}"
    )
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patterning",
        description="Susceptibilities and patterning: read and write a network's structure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the end-to-end pipeline on the demo preset")
    demo.add_argument("--out", help="results folder (default $PATTERNING_HOME/demo)")
    demo.add_argument("--dask-address", help="run on this Dask scheduler")
    demo.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=run_demo)

    toy = sub.add_parser("toy", help="LLC and χ on toy models with known answers")
    toy.add_argument("--quiet", action="store_true", help="no progress bars")
    toy.set_defaults(func=run_toy)

    run = sub.add_parser("run", help="run one flow with parameters from a JSON/YAML file")
    run.add_argument("flow", choices=FLOWS)
    run.add_argument("--config", help="JSON or YAML file of flow parameters")
    run.add_argument("--dask-address", help="run on this Dask scheduler")
    run.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    run.set_defaults(func=run_flow)

    server = sub.add_parser("server", help="local Prefect server and Dask cluster")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    server.add_argument("--no-dask", action="store_true", help="start only the Prefect server")
    server.set_defaults(func=run_server)

    induce = sub.add_parser(
        "induce",
        help="demonstration 1: Induce and Repress the induction circuit by re-weighting data",
    )
    from flows.induction_patterning import build_parser as induce_arguments

    induce_arguments(induce)
    induce.set_defaults(func=run_induce)

    spacing = sub.add_parser(
        "spacing",
        help="demonstration 1, whitespace: weight the data along the χ mode of the spacing heads",
    )
    from flows.spacing import build_parser as spacing_arguments

    spacing_arguments(spacing)
    spacing.set_defaults(func=run_spacing)

    paren = sub.add_parser(
        "parentheses",
        help="demonstration 2: choose the algorithm in parentheses balancing via the LLC",
    )
    from tasks.parentheses import add_arguments as parentheses_arguments

    parentheses_arguments(paren)
    paren.add_argument("--out", help="report folder (default under $PATTERNING_HOME)")
    paren.set_defaults(func=run_parentheses)

    chi = sub.add_parser("chi", help="inspect and export χ stores")
    chi.add_argument("action", choices=("show", "export"))
    chi.add_argument("path", help="χ store (path or fsspec URL)")
    chi.add_argument("--format", choices=("csv", "netcdf"), default="csv")
    chi.add_argument("--out", help="output file (default beside the store)")
    chi.add_argument("--checkpoint", type=int, action="append", help="select checkpoint steps")
    chi.add_argument("--component", action="append", help="select components")
    chi.set_defaults(func=run_chi)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.command_runs import interrupted_message, stop_signals
    from patterning_core.model.checkpoints import CheckpointError
    from patterning_core.sampling.sgld import ConfigError
    from patterning_core.store.chi_store import StoreError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with stop_signals(argv):  # SIGTERM and SIGHUP end the command as Ctrl-C does
            return args.func(args)
    except KeyboardInterrupt as err:
        print(f"\n{interrupted_message(err)}")
        return 128 + getattr(err, "signum", 2)
    except (ConfigError, CheckpointError, StoreError, FileNotFoundError) as err:
        print(f"patterning: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
