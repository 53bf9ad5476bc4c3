"""How much of the fin readings is the sampler's? The fin read off disjoint chain sets of one
χ store (sets of 1, 2, 4, … chains), with the initialization read the same way as the null
for "beyond the initialization".

    .venv/bin/python scripts/fin_chain_count.py --preset demo_long \\
        --store .patterning/fin_chains/chi16.zarr --step 3000 --init-step 0 \\
        --sizes 2 4 8 16 --same-as .patterning/spacing_fin/long_fin/chi.zarr \\
        --out docs/results/spacing/fin_long/chain_count

The store comes from ``patterning run susceptibilities --config
docs/examples/spacing_fin_long_chains16_chi.json`` (16 chains at steps 0 and 3,000 of the
long-context reference, seed 0; the same sampler as the ``spacing-fin`` flow otherwise).
``--same-as`` names a store of the same model estimated with fewer chains of the same sampler
seed: its chains must equal the first chains of this one (each chain's noise stream and
minibatch order are keyed by the seed and the chain), which the script checks and prints.
See ``patterning_core/experiments/spacing/fin_chains.py`` for the readings.

``--units outline`` reads only the units of the held-out outline probe sequences (a
workload with ``probe_outline``; ``--units corpus`` only the corpus ones), ``--components
L1H`` only the components whose names start with a given prefix; both restrict χ before
its modes are taken; ``--estimator restricted`` reads the restricted χ instead of the
two-run one.

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

from patterning_core.data.lm_data import probe_kinds
from patterning_core.experiments.spacing import fin_chains
from patterning_core.model.transformer import preset
from patterning_core.store.chi_store import chi_at, open_chi, read_stats

READINGS = [
    ("metric", "fin metric"),
    ("partial_metric", "loss-controlled"),
    ("from_chi", "position from χ"),
    ("beyond_loss", "beyond the loss"),
    ("agreement", "the fin mode found again: abs. cosine of its unit loadings, set i vs i + 1"),
    ("beyond_init", "beyond the initialization"),
    ("init_metric", "initialization: fin metric"),
    ("init_from_chi", "initialization: position from χ"),
    ("init_beyond_init", "null: initialization beyond another estimate of itself"),
]


def same_as(store: str, other: str, step: int) -> float:
    """max |Δχ| / max |χ| between ``other``'s χ at ``step`` and this store's χ of as many
    leading chains."""
    theirs, _, _ = chi_at(other, step)
    n = read_stats(other, step).sizes["chain"]
    ours, _ = fin_chains.chi_of_chains(read_stats(store, step), range(n))
    theirs = theirs.transpose("component", "unit")
    return float(np.abs(ours.values - theirs.values).max() / np.abs(theirs.values).max())


def select(
    store: str, which: str, prefixes: list[str] | None
) -> tuple[np.ndarray | None, list[str] | None]:
    """The unit mask and component names that ``--units`` and ``--components`` ask for."""
    ds = open_chi(store)
    units = None
    if which != "all":
        kinds = probe_kinds(json.loads(ds.attrs["workload"]))
        if which not in set(kinds):
            raise SystemExit(f"{store} has no {which} probe sequences (its workload's probe_*).")
        units = fin_chains.sequence_units(ds, np.flatnonzero(kinds == which))
    components = None
    if prefixes:
        components = [c for c in ds.component.values.tolist() if c.startswith(tuple(prefixes))]
        if not components:
            raise SystemExit(f"no component of {store} starts with {prefixes}.")
    return units, components


def cell(value: tuple[float, float] | None, sets: int) -> str:
    if value is None:
        return "—"
    mean, sd = value
    return f"{mean:+.3f} ± {sd:.3f}" if sets > 1 else f"{mean:+.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--init-step", type=int, help="the initialization's step")
    parser.add_argument("--init-store", help="the store holding it (default: --store)")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--same-as", help="a store of the same model with fewer chains")
    parser.add_argument("--units", choices=["all", "corpus", "outline"], default="all")
    parser.add_argument("--components", nargs="+", help="component name prefixes to keep")
    parser.add_argument("--estimator", choices=["two_run", "restricted"], default="two_run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = preset(args.preset)
    init_store = args.init_store or args.store
    init = (init_store, args.init_step) if args.init_step is not None else None
    units, components = select(args.store, args.units, args.components)
    rows = fin_chains.fin_by_chain_count(
        args.store,
        args.step,
        config,
        args.sizes,
        init=init,
        units=units,
        components=components,
        estimator=args.estimator,
    )
    summary = fin_chains.summarize(rows)
    subset = {"units": units, "components": components, "estimator": args.estimator}
    reliability = {"trained": fin_chains.split_half(read_stats(args.store, args.step), **subset)}
    if init is not None:
        reliability["initialization"] = fin_chains.split_half(read_stats(*init), **subset)
    check = same_as(args.store, args.same_as, args.step) if args.same_as else None

    command = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    lines = [
        f"# The fin against the number of SGLD chains: `{args.preset}`, step {args.step}"
        + (f", {args.units} units" if args.units != "all" else "")
        + (f", components {' '.join(args.components)}*" if args.components else "")
        + (f", {args.estimator} χ" if args.estimator != "two_run" else ""),
        "",
        "Written by `scripts/fin_chain_count.py` (see its docstring and "
        "`experiments/spacing/fin_chains.py`):",
        "",
        f"    .venv/bin/python scripts/fin_chain_count.py {command}",
        "",
        "Each column is one chain-set size: the store's chains cut into disjoint sets of that "
        "many chains, each set read as its own χ estimate; mean ± sd over the sets. "
        "Beyond the initialization: the trained χ of set i against the initialization's χ of "
        "set i + 1; its null: the initialization's set i against its set i + 1.",
        "",
        "| reading | "
        + " | ".join(f"{s['size']} chains ({s['sets']} sets)" for s in summary)
        + " |",
        "|---|" + "---:|" * len(summary),
    ]
    for key, label in READINGS:
        if not any(key in s for s in summary):
            continue
        lines.append(
            f"| {label} | " + " | ".join(cell(s.get(key), s["sets"]) for s in summary) + " |"
        )
    modes = {s: [r["mode"] for r in rows if r["size"] == s] for s in args.sizes}
    lines += [
        "",
        "Fin mode per set: " + "; ".join(f"{s} chains: {m}" for s, m in modes.items()) + ".",
        "",
        "Split-half reliability of χ (per component, Pearson r over units between the two "
        "halves of the chains; median over components, and its Spearman–Brown projection to "
        "all chains): "
        + "; ".join(
            f"{k} {v['median']:.3f} (all chains {v['spearman_brown']:.3f})"
            for k, v in reliability.items()
        )
        + ". The same less each half's leading mode (standardized χ; the small modes, where "
        "the fin lives): "
        + "; ".join(
            f"{k} {v['residual_median']:.3f} (all chains {v['residual_spearman_brown']:.3f})"
            for k, v in reliability.items()
        )
        + ".",
    ]
    if check is not None:
        lines += [
            "",
            f"The first chains of this store against `{args.same_as}` (the same sampler seed): "
            f"max |Δχ| / max |χ| = {check:.1e}.",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    payload = {
        "command": command,
        "rows": rows,
        "summary": summary,
        "reliability": reliability,
        "same_as": check,
    }
    args.out.with_name(args.out.name + ".json").write_text(
        json.dumps(payload, indent=1, default=float) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
