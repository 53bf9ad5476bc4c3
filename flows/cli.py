"""The ``patterning`` command line: every command's options, in one place.

patterning demo                     the end-to-end pipeline on the demo preset
patterning toy                      LLC and χ on toy models with known answers (seconds)
patterning run FLOW --config FILE   run a flow with parameters from a JSON/YAML file
patterning server start|stop|status a local Prefect server and Dask cluster (127.0.0.1)
patterning induce | spacing | parentheses | toy-superposition   the demonstrations
patterning chi show PATH...         summary of χ stores (several: compared as runs)
patterning chi export PATH... ...   a selection of χ as CSV or netCDF
patterning chi map PATH --out DIR   the map of a χ store: modes, spectra, token embeddings

Each command builds its flow's parameter model (``flows/parameters.py``) from its options
or config file before anything starts: bad parameters exit with status 2 and one line
naming the field and the fix, before a Prefect server starts or a folder is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from patterning_core.sampling.config import ConfigError

# `patterning run NAME`: the module and function of each flow, and its parameter model
# (flows/parameters.py). Flows are imported only when run (Prefect is slow to import).
FLOWS = {
    "train": ("flows.train", "train_flow", "TrainParameters"),
    "susceptibilities": ("flows.susceptibilities", "susceptibilities", "SusceptibilityParameters"),
    "decompose": ("flows.decompose", "decompose_flow", "DecomposeParameters"),
    "pipeline": ("flows.pipeline", "pipeline", "PipelineParameters"),
    "induction-patterning": (
        "flows.induction_patterning",
        "induction_patterning",
        "InductionPatterningParameters",
    ),
    "spacing": ("flows.spacing", "spacing", "SpacingParameters"),
    "spacing-fin": ("flows.spacing_fin", "spacing_fin", "SpacingFinParameters"),
    "induce": ("flows.induce", "induce", "InduceParameters"),
    "toy-superposition": (
        "flows.toy_superposition",
        "toy_superposition",
        "ToySuperpositionParameters",
    ),
    "chi-map": ("flows.chi_map", "chi_map", "ChiMapParameters"),
}


# ----------------------------------------------------------------------------- toy


def run_toy(args: argparse.Namespace) -> int:
    """Print the toy tour (``patterning_core.toys.tour``): LLC against a closed form, then
    LLC and χ of a small MLP."""
    import numpy as np
    import torch

    from patterning_core.toys.tour import mlp_llc_and_chi, regression_llc

    torch.manual_seed(0)
    torch.set_num_threads(1)  # toy models: one thread is fastest
    progress = None if not args.quiet else False
    started = time.perf_counter()

    print("1. LLC of linear regression (Gaussian posterior, exact answer known)")
    r = regression_llc(progress)
    print(
        f"   estimate {r.estimate:.3f} ± {r.standard_error:.3f} (SE)   "
        f"exact posterior {r.exact:.3f}   stationary law of the ε={r.step_size:g} chain "
        f"{r.discretized:.3f}   R̂ {r.rhat:.3f}\n"
    )
    print("2. A one-hidden-layer MLP fitted to a smooth target")
    llc, chi = mlp_llc_and_chi(progress)
    print(f"   {llc}")
    if llc.rhat > 1.1:
        print("   warning: R̂ > 1.1, the chains disagree; raise num_burnin or num_draws.")
    print(
        "   susceptibilities χ (component × probe example; no nβ factor, "
        "χ > 0: up-weighting the example raises the component's loss)"
    )
    print("   " + "component".ljust(10) + "".join(f"{int(u):>9}" for u in chi.unit.values))
    for name in chi.component.values:
        row = np.asarray(chi.sel(component=name).values)
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


def dask_address(args: argparse.Namespace) -> str | None:
    """The ``--dask-address`` flag, else a cluster started by ``patterning server start``."""
    from flows.server import status

    address = getattr(args, "dask_address", None)
    if not address:
        state = status()
        if state.get("dask_ok"):
            address = state["dask_address"]
    return address


def run_demo(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.parameters import PipelineParameters
    from flows.pipeline import pipeline
    from flows.server import prefect_api
    from patterning_core.workspace import patterning_home

    out = Path(args.out) if args.out else patterning_home() / "demo"
    params = PipelineParameters(
        preset="demo", out_dir=str(out), dask_address=dask_address(args), n_workers=args.workers
    )
    started = time.perf_counter()
    with prefect_api() as api, StoreProgress(out / "chi.zarr", not args.quiet):
        print(f"Prefect API {api}; results in {out}")
        summary = run_tracked(pipeline, params)
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


def flow_and_parameters(name: str):  # -> (prefect.Flow, type[FlowParameters])
    """The flow ``name`` (a key of ``FLOWS``) and its parameter model."""
    import importlib

    from flows import parameters

    module, function, model = FLOWS[name]
    return getattr(importlib.import_module(module), function), getattr(parameters, model)


def with_runtime(model: type, config: dict, args: argparse.Namespace) -> dict:
    """``config`` with the command's Dask options, for models that take them (the file's
    own values win over the defaults of the flags, not over flags given explicitly)."""
    fields = model.model_fields
    config = dict(config)
    if "dask_address" in fields and (address := dask_address(args)):
        config["dask_address"] = address
    if "n_workers" in fields and (args.workers is not None or "n_workers" not in config):
        config["n_workers"] = args.workers if args.workers is not None else 2
    return config


def run_flow(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.server import prefect_api

    config = load_config(args.config) if args.config else {}
    if not isinstance(config, dict):
        raise ConfigError(f"the config file must hold a mapping of parameters, got {config!r}.")
    fn, model = flow_and_parameters(args.flow)
    params = model.model_validate(with_runtime(model, config, args))  # before any server
    with prefect_api():
        result = run_tracked(fn, params)
    if args.flow == "pipeline":
        print_pipeline_summary(result, 0.0)
    elif "rows" in result:
        print_run_table(result)
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
    from patterning_core.store.export import default_export_path, export_chi
    from patterning_core.store.runs import one_or_runs, summary

    if args.action == "map":
        return run_chi_map(args)
    stores = one_or_runs(args.path, args.run)
    if args.action == "show":
        print(summary(stores, args.run))
        return 0
    out = args.out or default_export_path(stores, args.format)
    path = export_chi(stores, out, args.format, args.checkpoint, args.component, runs=args.run)
    print(f"wrote {path}")
    return 0


def run_chi_map(args: argparse.Namespace) -> int:
    """``patterning chi map``: the ``chi-map`` flow's work in this process (no server)."""
    from flows.chi_map import map_here
    from flows.parameters import ChiMapParameters

    if len(args.path) != 1:
        raise ConfigError("chi map draws one store at a time: give one path.")
    (store,) = args.path
    out = args.out or str(Path(store).with_suffix("")) + "-map"
    params = ChiMapParameters(
        store=store,
        out_dir=out,
        checkpoints=args.checkpoint,
        color_by=args.color_by or [],
        umap=not args.no_umap,
    )
    result = map_here(params)
    print(f"map of {result['checkpoints']} written to {store}; page {result['page']}")
    return 0


# ----------------------------------------------------------------------------- demonstrations


def print_run_table(result: dict) -> None:
    """Print a demonstration flow's ``rows`` as a table, then its report and training work."""
    from patterning_core.report.markdown import markdown_table

    print("\n".join(markdown_table(result["rows"])))
    print(f"\nreport: {result['report']}  (optimizer steps trained: {result['trained_steps']})")


def induce_parameters(args: argparse.Namespace):  # -> InduceParameters
    """The ``induce`` flow's parameters: the ``--config`` file (default: every default of
    ``InduceParameters``), then the options given on the command line."""
    from flows.parameters import InduceParameters

    config = load_config(args.config) if args.config else {}
    if not isinstance(config, dict):
        raise ConfigError(f"the config file must hold a mapping of parameters, got {config!r}.")
    given = {
        "seeds": args.seeds,
        "out_dir": args.out,
        "report_dir": args.report_dir,
        "runs_root": args.runs_root,
        "retrain_without_mode": True if args.retrain_without_mode else None,
    }
    config.update({k: v for k, v in given.items() if v is not None})
    return InduceParameters.model_validate(with_runtime(InduceParameters, config, args))


def run_induce(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.induce import induce
    from flows.server import prefect_api

    params = induce_parameters(args)  # before any server: bad input fails fast
    with prefect_api():
        result = run_tracked(induce, params)
    print(f"report: {result['report']}\nresults: {result['results']}")
    for row in result["targets"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    return 0


def spacing_parameters(args: argparse.Namespace):  # -> SpacingParameters
    """The spacing flow's parameters from ``patterning spacing`` options."""
    from flows.parameters import SpacingParameters
    from patterning_core.recipes import demo_sampler, spacing_train

    train = spacing_train()
    if args.steps is not None:
        train["steps"] = args.steps
        train["checkpoint_steps"] = list(range(0, args.steps + 1, 250))
    sampler = demo_sampler()
    if args.draws is not None:
        sampler["num_draws"] = args.draws
    return SpacingParameters(
        preset=args.preset,
        train=train,
        seeds=args.seeds,
        chi_step=args.chi_step,
        alpha=args.alpha,
        sampler=sampler,
        eval_seqs=args.eval_seqs,
        **output_and_workers(args),
    )


def run_spacing(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.server import prefect_api
    from flows.spacing import spacing

    params = spacing_parameters(args)
    with prefect_api():
        result = run_tracked(spacing, params)
    print_run_table(result)
    return 0


def run_toy_superposition(args: argparse.Namespace) -> int:
    """Demonstration 0 (``flows/toy_superposition.py``); print the headline numbers."""
    from flows.command_runs import run_tracked
    from flows.parameters import ToySuperpositionParameters
    from flows.server import prefect_api
    from flows.toy_superposition import toy_superposition

    params = ToySuperpositionParameters(
        seeds=args.seeds, target=args.target, alpha=args.alpha, out_dir=args.out
    )
    with prefect_api():
        result = run_tracked(toy_superposition, params)
    c, t = result["conditions"], result["targets"]
    for name, s in c.items():
        lo, hi = s["wilson95"]
        print(f"{name:>9}: {s['reached']:>3}/{s['n']} [{lo:.2f}, {hi:.2f}]")
    print(
        f"χ rise {t['chi_rise']:+.2f} (target met: {t['chi_target_met']}), control shift "
        f"{t['control_shift']:+.2f} (target met: {t['control_target_met']}); "
        f"{t['less_change']}\nreport: {result['report']} ({result['wall_seconds']:.0f} s)"
    )
    return 0


def add_model_options(parser: argparse.ArgumentParser, model: type) -> argparse.ArgumentParser:
    """One option per field of the pydantic ``model``: ``--name-with-dashes VALUE``, a bool
    defaulting to False as ``--name``, one defaulting to True as ``--no-name``. Options not
    given are left out of the namespace, so the model's defaults apply."""
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        text = field.description or ""
        if field.annotation is bool:
            off = field.default is True
            parser.add_argument(
                "--no-" + flag[2:] if off else flag,
                dest=name,
                action="store_false" if off else "store_true",
                default=argparse.SUPPRESS,
                help=f"do not {text}" if off and text else text,
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                type=field.annotation,
                default=argparse.SUPPRESS,
                metavar=field.annotation.__name__.upper(),
                help=f"{text} (default {field.default})",
            )
    return parser


def model_options(args: argparse.Namespace, model: type) -> dict:
    """The options of ``add_model_options`` that were given, as the model's fields."""
    return {k: v for k, v in vars(args).items() if k in model.model_fields}


def run_parentheses(args: argparse.Namespace) -> int:
    from flows.command_runs import run_tracked
    from flows.parentheses import ParenthesesParameters, parentheses
    from flows.server import prefect_api

    # A pydantic ValidationError here (main(): exit status 2) comes before any server starts.
    params = ParenthesesParameters(**model_options(args, ParenthesesParameters))
    with prefect_api():
        summary = run_tracked(parentheses, params, args.out)
    gate = "passed" if summary["gate_passed"] else "not passed"
    line = f"lever gate {gate}"
    if summary["retrained"]:
        nested, equal = summary["nested"], summary["equal_count"]
        line += (
            f"; Nested {nested[0]} -> {nested[1]}, Equal-Count {equal[0]} -> {equal[1]} "
            f"(paired sign test p = {summary['paired_sign_test_p']:.3g})"
        )
    else:
        line += "; not retrained"
    print(f"{line}\nreport: {summary['report']}")
    return 0


# ----------------------------------------------------------------------------- parser


def output_and_workers(args: argparse.Namespace) -> dict:
    """The fields of ``RetrainingFields`` that :func:`add_output_and_workers` set."""
    return {
        "out_dir": args.out,
        "runs_root": args.runs_root,
        "dask_address": args.dask_address,
        "n_workers": args.workers,
    }


def add_output_and_workers(p: argparse.ArgumentParser, workers_help: str) -> None:
    """The options every demonstration command shares: where results and runs go, and where
    and how widely the work runs."""
    p.add_argument("--out", default=None, help="report folder")
    p.add_argument("--runs-root", default=None, help="folder of the training runs")
    p.add_argument("--dask-address", default=None, help="run on this Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help=workers_help)


def add_induce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        help="JSON/YAML of InduceParameters (the full run: docs/examples/induce.json)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="retrained seeds")
    p.add_argument("--report-dir", default=None, help="report, plots and results.json")
    p.add_argument(
        "--retrain-without-mode",
        action="store_true",
        help="retrain even if the mode search finds no induction mode",
    )
    p.add_argument("--out", default=None, help="χ stores and weights (out_dir)")
    p.add_argument("--runs-root", default=None, help="folder of the training runs")
    p.add_argument("--dask-address", default=None, help="run on this Dask scheduler")
    p.add_argument("--workers", type=int, default=None, help="χ shards and runs in parallel")


def add_spacing_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--chi-step", type=int, default=1000, help="checkpoint of χ")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--draws", type=int, default=None, help="SGLD draws per chain")
    p.add_argument("--eval-seqs", type=int, default=256)
    add_output_and_workers(p, workers_help="χ shards and runs in parallel")


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
    run.add_argument("flow", choices=list(FLOWS))
    run.add_argument("--config", help="JSON or YAML file of the flow's parameters")
    run.add_argument("--dask-address", help="run on this Dask scheduler")
    run.add_argument("--workers", type=int, default=None, help="local Dask workers (default 2)")
    run.set_defaults(func=run_flow)

    server = sub.add_parser("server", help="local Prefect server and Dask cluster")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    server.add_argument("--no-dask", action="store_true", help="start only the Prefect server")
    server.set_defaults(func=run_server)

    induce = sub.add_parser(
        "induce",
        help="demonstration 1: χ steers the induction circuit on natural text, against controls",
    )
    add_induce_arguments(induce)
    induce.set_defaults(func=run_induce)

    spacing = sub.add_parser(
        "spacing",
        help="demonstration 1, whitespace: weight the data along the χ mode of the spacing heads",
    )
    add_spacing_arguments(spacing)
    spacing.set_defaults(func=run_spacing)

    paren = sub.add_parser(
        "parentheses",
        help="demonstration 2: choose the algorithm in parentheses balancing via the LLC",
    )
    from flows.parentheses import ParenthesesParameters

    add_model_options(paren, ParenthesesParameters)
    paren.add_argument("--out", help="report folder (default under $PATTERNING_HOME)")
    paren.set_defaults(func=run_parentheses)

    toy_sup = sub.add_parser(
        "toy-superposition",
        help="demonstration 0: pattern which features a toy model of superposition represents",
    )
    toy_sup.add_argument("--seeds", type=int, default=100, help="seeds per condition")
    toy_sup.add_argument("--target", type=int, default=4, help="feature to represent")
    toy_sup.add_argument("--alpha", type=float, default=1.0, help="α of the main conditions")
    toy_sup.add_argument(
        "--out",
        default="docs/results/toy_superposition",
        help="report folder (default docs/results/toy_superposition)",
    )
    toy_sup.set_defaults(func=run_toy_superposition)

    chi = sub.add_parser("chi", help="inspect and export χ stores")
    chi.add_argument("action", choices=("show", "export", "map"))
    chi.add_argument("path", nargs="+", help="χ store(s) (path or fsspec URL); several: as runs")
    chi.add_argument("--run", action="append", help="label of each store, in order (several)")
    chi.add_argument("--format", choices=("csv", "netcdf"), default="csv")
    chi.add_argument("--out", help="output file, or the map's folder (default beside the store)")
    chi.add_argument("--checkpoint", type=int, action="append", help="select checkpoint steps")
    chi.add_argument("--component", action="append", help="select components")
    chi.add_argument("--color-by", action="append", help="map: colour tokens by this coordinate")
    chi.add_argument("--no-umap", action="store_true", help="map: PCA only, no UMAP")
    chi.set_defaults(func=run_chi)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.command_runs import interrupted_message, stop_signals
    from flows.parameters import describe
    from patterning_core.model.checkpoints import CheckpointError
    from patterning_core.store.chi_store import StoreError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with stop_signals(argv):  # SIGTERM and SIGHUP end the command as Ctrl-C does
            return args.func(args)
    except KeyboardInterrupt as err:
        print(f"\n{interrupted_message(err)}")
        return 128 + getattr(err, "signum", 2)
    except ValidationError as err:
        print(f"patterning: error: {describe(err)}", file=sys.stderr)
        return 2
    except (ConfigError, CheckpointError, StoreError, FileNotFoundError) as err:
        print(f"patterning: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
