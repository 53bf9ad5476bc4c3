"""χ-suppress weights from the fin mode that independent chains find again (the outline
model's restricted χ on its outline units), the same-dose control, and the retraining.

The ``spacing-fin`` flow builds its weights from the fin mode of one 4-chain χ, which
another 4-chain χ of the same network does not find again (README, "How much of each reading
is the sampler's"). The one reading whose fin mode *is* found again is the restricted χ of
the outline model on its outline probe units (``docs/results/spacing/fin_outline/subsets``).
This script takes the weights from that reading, on all chains of its store:

    .venv/bin/python scripts/fin_outline_suppress.py weights --preset demo_long \\
        --store .patterning/fin_chains/outline_units_chi16.zarr --step 3000 \\
        --train-config docs/examples/spacing_fin_outline_train.json \\
        --out docs/results/spacing/fin_outline/suppress/weights
    .venv/bin/python scripts/fin_outline_suppress.py train --condition chi_suppress \\
        --train-config docs/examples/spacing_fin_outline_train.json \\
        --weights docs/results/spacing/fin_outline/suppress/weights.json --threads 2

``weights``: the fin mode of the restricted χ over the outline units (all chains), dh along
it (``fin_weights``: dh = −s·v_k/nβ, its class means by run position) applied to the outline
training rows only (``LMTokens.outline_rows``; corpus rows keep weight 1 before the mean is
normalized), and the control that scales the outline rows' whitespace to the same share;
the ``.npy`` files (named by digest) under ``$PATTERNING_HOME/fin_outline_suppress/``, and
``<out>.json`` / ``<out>.md`` with the class weights and doses. ``train``: one condition
from the reference's initialization and data order (the weights read back and checked by
digest; ``collapse_whitespace`` is the data edit, no weights), in the run folder the
retraining task would use (``tasks.retraining.train_with_weights``); prints the run folder.
χ of each retrained model: ``patterning run susceptibilities --config
docs/examples/spacing_fin_outline_<condition>_seed0_chi.json``, read with
``scripts/fin_chain_count.py`` like the reference.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.data.lm_data import load_lm_tokens, probe_kinds
from patterning_core.experiments.spacing import fin_chains
from patterning_core.experiments.spacing.fin_store import fin_inputs, probe_tokens, read_fin
from patterning_core.experiments.spacing.fin_weights import fin_weights
from patterning_core.model.transformer import preset
from patterning_core.store.chi_store import read_stats
from patterning_core.workspace import patterning_home

CONDITIONS = ("chi_suppress", "control_dose", "collapse_whitespace")


def outline_units(store: str) -> np.ndarray:
    """The mask ``[unit]`` of the store's outline probe units."""
    from patterning_core.store.chi_store import open_chi

    ds = open_chi(store)
    kinds = probe_kinds(json.loads(ds.attrs["workload"]))
    if "outline" not in set(kinds):
        raise SystemExit(f"{store} holds no outline probe sequences (workload probe_outline).")
    return fin_chains.sequence_units(ds, np.flatnonzero(kinds == "outline"))


def make_weights(args: argparse.Namespace) -> int:
    config = preset(args.preset)
    train_spec = json.loads(Path(args.train_config).read_text())
    _, positions, _, ds = fin_inputs(args.store, args.step, config)
    units = outline_units(args.store)
    stats = read_stats(args.store, args.step)
    chains = range(stats.sizes["chain"])
    chi, loss = fin_chains._chi(stats, chains, units, None, args.estimator)
    fin = read_fin(chi, positions[units], loss)
    n_beta = float(ds.attrs["n_beta"])
    workload = json.loads(ds.attrs["workload"])
    probes, strings = probe_tokens(workload, config)
    tokens = load_lm_tokens(train_spec["data"], config)
    if tokens.outline_rows is None:
        raise SystemExit("the training data hold no outline rows: use a data spec with outline.")
    start, stop = tokens.outline_rows
    rows = np.zeros(tokens.train.shape[0], dtype=bool)
    rows[start:stop] = True
    result = fin_weights(
        chi,
        n_beta,
        fin,
        probes,
        tokens.train,
        strings,
        args.alpha,
        probe_units=units,
        train_rows=rows,
    )
    from tasks.retraining import save_weights

    folder = patterning_home() / "fin_outline_suppress" / "weights"
    files = {}
    for name, weights in result.weights.items():
        path, digest = save_weights(weights, folder)
        files[name] = {"path": path, "digest": digest}
    rho = result.weights["chi_suppress"]
    inside = rho[rows]
    deciles = np.sort(inside.ravel())
    tenth = max(1, deciles.size // 10)
    ratio = float(deciles[-tenth:].mean() / max(deciles[:tenth].mean(), 1e-12))
    info = {
        "command": " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "store": args.store,
        "step": args.step,
        "estimator": args.estimator,
        "chains": stats.sizes["chain"],
        "units": int(units.sum()),
        "fin": {
            "mode": int(fin["mode"]),
            "metric": float(fin["metric"]),
            "rho": float(fin["rho"]),
            "explained_variance": fin["explained_variance"],
        },
        "outline_rows": [start, stop],
        "files": files,
        "decile_ratio_outline_rows": ratio,
        **result.summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=float))
    out.with_suffix(".md").write_text(report(info))
    print(report(info))
    return 0


def report(info: dict) -> str:
    fin = info["fin"]
    share = info["whitespace_share"]
    lines = [
        "# χ-suppress weights from the outline units' restricted fin mode",
        "",
        "Written by `scripts/fin_outline_suppress.py` (see its docstring):",
        "",
        f"    .venv/bin/python scripts/fin_outline_suppress.py {info['command']}",
        "",
        f"χ: `{info['store']}`, step {info['step']}, {info['estimator']} estimator, all "
        f"{info['chains']} chains, {info['units']} outline probe units. Fin mode {fin['mode']} "
        f"(explained variance {fin['explained_variance']:.3f}), fin metric {fin['metric']:.3f}. "
        f"Weights applied to the outline training rows {info['outline_rows'][0]}–"
        f"{info['outline_rows'][1] - 1} only; class fit R² {info['fit_r2']:.3f}.",
        "",
        f"Dose: mean |ρ − 1| {info['dose']['chi_suppress']:.3f} (control "
        f"{info['dose']['control_dose']:.3f}); top-decile over bottom-decile weight in the "
        f"outline rows {info['decile_ratio_outline_rows']:.2f}; zero weights "
        f"{info['zero_weights']}, largest {info['max_weight']:.2f}. Whitespace share of the "
        f"outline rows' whitespace in the total weight: uniform {share['uniform']:.3f}, "
        f"χ-suppress {share['chi_suppress']:.3f}, control {share['control_dose']:.3f}.",
        "",
        "| class (outline rows) | probe units | probe dh, class mean | mean weight |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(info["class_weight"], key=_class_order):
        dh = info["class_dh"].get(name)
        count = info["class_counts"].get(name, 0)
        cell = "—" if dh is None else f"{dh:+.5f}"
        lines.append(f"| {name} | {count} | {cell} | {info['class_weight'][name]:.3f} |")
    return "\n".join(lines) + "\n"


def _class_order(name: str) -> tuple[int, str]:
    if name.startswith("space@"):
        tail = name.removeprefix("space@").rstrip("+")
        return (0, f"{int(tail):03d}" if tail.isdigit() else "999")
    return (1, name)


def train(args: argparse.Namespace) -> int:
    from tasks.retraining import load_weights, train_with_weights
    from tasks.training import check_training_inputs, model_preset, run_key, train_in_run_dir

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.train_config).read_text())
    name, data, settings = spec["preset"], spec["data"], {**spec["train"], "seed": args.seed}
    runs_root = str(patterning_home() / "runs")
    if args.condition == "collapse_whitespace":
        data = {**data, "collapse_spaces": True}
        tc = check_training_inputs(name, data, settings)
        run_dir = Path(runs_root) / f"{name}-{run_key(name, data, settings)}"
        tokens = load_lm_tokens(data, model_preset(name))
        train_in_run_dir(model_preset(name), tokens, tc, run_dir, title=args.condition)
    else:
        info = json.loads(Path(args.weights).read_text())["files"][args.condition]
        tokens = load_lm_tokens(data, model_preset(name))
        shape = (tokens.train.shape[0], tokens.train.shape[1] - 1)
        weights = load_weights(info["path"], info["digest"], shape).numpy()
        run_dir = train_with_weights(
            name,
            data,
            settings,
            weights,
            Path(info["path"]).parent,
            runs_root,
            tokens,
            args.condition,
        )
    print(run_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights", help="the χ-suppress and control weights")
    w.add_argument("--preset", required=True)
    w.add_argument("--store", required=True)
    w.add_argument("--step", type=int, required=True)
    w.add_argument("--train-config", required=True, help="the reference's training config")
    w.add_argument("--estimator", choices=["two_run", "restricted"], default="restricted")
    w.add_argument("--alpha", type=float, default=1.0)
    w.add_argument("--out", required=True, help="<out>.json and <out>.md")
    t = sub.add_parser("train", help="retrain one condition")
    t.add_argument("--condition", choices=CONDITIONS, required=True)
    t.add_argument("--train-config", required=True)
    t.add_argument("--weights", help="the weights command's <out>.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "train" and args.condition != "collapse_whitespace" and not args.weights:
        parser.error(f"--condition {args.condition} needs --weights")
    return make_weights(args) if args.command == "weights" else train(args)


if __name__ == "__main__":
    raise SystemExit(main())
