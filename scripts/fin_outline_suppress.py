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
``<out>.json`` / ``<out>.md`` with the class weights and doses (``--amplify``: the opposite
sign, weight moved toward the fin's deep end, files ``chi_amplify`` and ``control_amplify``).
``rebuild``: the weights files again from a published ``weights`` record alone (its class
means; each file checked against the recorded digest), for a machine without the χ store. With
``--alpha A --out PATH`` the same class means at another dose, with a new record.
``train``: one condition (``--seed``: another seed's initialization and data order; the
``baseline`` is the recipe unweighted)
from the reference's initialization and data order (the weights read back and checked by
digest; ``collapse_whitespace`` is the data edit, no weights), in the run folder the
retraining task would use (``tasks.retraining.train_with_weights``); prints the run folder.
χ of each retrained model: ``patterning run susceptibilities --config
docs/examples/spacing_fin_outline_<condition>_seed0_chi.json``. ``read``: every model read
as the reference is (``fin_chains.fin_by_chain_count`` on the outline units with the
restricted estimator, 4- and 8-chain sets, beyond the reference's initialization), the
abs. cosine of its fin mode (chains 0–7) with the reference's (chains 8–15, disjoint), the
share of its standardized χ along the reference's fin loading, and the counting losses on
held-out outline text (``experiments/spacing/counting.py``); without ``--reference`` each
model is read alone (nothing against the reference's mode or initialization), and
``--publish FILE.nc`` also writes every model's χ on the outline units (``publish_chi``):

    .venv/bin/python scripts/fin_outline_suppress.py read --preset demo_long \
        --reference docs/examples/spacing_fin_outline_units_chi16.json \
        --condition chi_suppress=docs/examples/spacing_fin_outline_chi_suppress_seed0_chi.json \
        --out docs/results/spacing/fin_outline/suppress/readings

``summary``: every reading the manifest names (its seed, condition and dose), each against
its seed's baseline and its same-share control (``experiments/spacing/outline_summary.py``),
as ``<out>.json``, ``<out>.md`` and ``<out>.png``:

    .venv/bin/python scripts/fin_outline_suppress.py summary \
        --manifest docs/results/spacing/fin_outline/summary_manifest.json \
        --out docs/results/spacing/fin_outline/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.data.lm_data import load_lm_tokens, probe_kinds
from patterning_core.experiments.spacing import fin_chains
from patterning_core.experiments.spacing.fin_store import fin_inputs, probe_tokens, read_fin
from patterning_core.experiments.spacing.fin_weights import fin_weights
from patterning_core.experiments.spacing.outline_reading import CONDITIONS
from patterning_core.model.transformer import preset
from patterning_core.store.chi_store import read_stats
from patterning_core.workspace import patterning_home

UNWEIGHTED = ("baseline", "collapse_whitespace")


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
    if args.amplify:  # the opposite sign: weight toward the fin's deep end
        fin = {**fin, "rho": -fin["rho"]}
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
    names = {"chi_suppress": "chi_amplify", "control_dose": "control_amplify"}
    for name, weights in result.weights.items():
        name = names[name] if args.amplify else name
        path, digest = save_weights(weights, folder)
        files[name] = {"path": path, "digest": digest}
    info = {
        "command": " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "store": args.store,
        "step": args.step,
        "estimator": args.estimator,
        "alpha": args.alpha,
        "amplify": args.amplify,
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
        "decile_ratio_outline_rows": result.summary["decile_ratio"],
        **result.summary,
    }
    return write_record(info, Path(args.out))


def write_record(info: dict, out: Path) -> int:
    """A weights record as ``<out>.json`` and ``<out>.md`` (:func:`report`, also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=float))
    out.with_suffix(".md").write_text(report(info))
    print(report(info))
    return 0


def report(info: dict) -> str:
    fin = info["fin"]
    share = info["whitespace_share"]
    lines = [
        "# χ-"
        + ("amplify" if info.get("amplify") else "suppress")
        + " weights from the outline units' restricted fin mode",
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
        f"χ weights {share['chi_suppress']:.3f}, control {share['control_dose']:.3f}.",
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


def rebuild(args: argparse.Namespace) -> int:
    """Write the weights files of a ``weights`` record again from its class means.

    The weights are a function of the probe dh's class means (``class_dh`` in the record)
    and of the training text alone (``fin_weights.class_weights``), so a published record
    rebuilds them without its χ store; each file is checked against the record's digest.
    With ``--out`` the weights are built at the dose ``--alpha`` (the record's class means,
    another α) and written with a new record ``<out>.json`` / ``<out>.md`` that ``train
    --weights`` takes; nothing is checked against the old digests then.
    """
    from patterning_core.experiments.spacing.fin_weights import (
        class_weights,
        train_fin_labels,
        weights_summary,
    )
    from tasks.retraining import save_weights

    record = json.loads(Path(args.record).read_text())
    recorded = record.get("alpha", 1.0)  # records written before α was kept used 1.0
    alpha = recorded if args.alpha is None else args.alpha
    if args.out is None and alpha != recorded:
        raise SystemExit(
            f"--alpha {alpha} is not the record's α ({recorded}): its digests "
            "cannot match; pass --out PATH to write the weights at this dose with a new record."
        )
    spec = json.loads(Path(args.train_config).read_text())
    config = preset(spec["preset"])
    tokens = load_lm_tokens(spec["data"], config)
    start, stop = record["outline_rows"]
    rows = np.zeros(tokens.train.shape[0], dtype=bool)
    rows[start:stop] = True
    labels = train_fin_labels(tokens.train, tokens.token_strings)
    rho, control = class_weights(record["class_dh"], labels, alpha, rows)
    amplify = record.get("amplify")
    names = ("chi_amplify", "control_amplify") if amplify else ("chi_suppress", "control_dose")
    folder = patterning_home() / "fin_outline_suppress" / "weights"
    if args.out is not None:
        files = {}
        for name, weights in zip(names, (rho, control), strict=True):
            path, digest = save_weights(weights.astype(np.float32), folder)
            files[name] = {"path": path, "digest": digest}
        summary = weights_summary(rho, control, labels, rows)
        kept = ("store", "step", "estimator", "amplify", "chains", "units", "fin", "mode")
        info = {
            "command": " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "rebuilt_from": args.record,
            "alpha": alpha,
            **{key: record[key] for key in kept if key in record},
            "outline_rows": [start, stop],
            "files": files,
            "decile_ratio_outline_rows": summary["decile_ratio"],
            "rho_sign": record["rho_sign"],
            "fit_r2": record["fit_r2"],
            "class_dh": record["class_dh"],
            "class_counts": record["class_counts"],
            **summary,
        }
        return write_record(info, Path(args.out))
    failed = []
    for name, weights in zip(names, (rho, control), strict=True):
        path, digest = save_weights(weights, folder)
        expected = record["files"][name]["digest"]
        if digest != expected:
            Path(path).unlink()
            failed.append(f"{name}: {digest[:16]}… rebuilt, {expected[:16]}… recorded")
        else:
            print(f"{name}: {path} (digest as recorded)")
            if path != record["files"][name]["path"]:
                print(f"  the record names {record['files'][name]['path']}: pass this record's")
                print("  digest with the path above, or set PATTERNING_HOME as it was")
    if failed:
        raise SystemExit("rebuilt weights differ from the record: " + "; ".join(failed))
    return 0


def train(args: argparse.Namespace) -> int:
    from tasks.retraining import load_weights, train_with_weights
    from tasks.training import check_training_inputs, model_preset, run_key, train_in_run_dir

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.train_config).read_text())
    name, data, settings = spec["preset"], spec["data"], {**spec["train"], "seed": args.seed}
    runs_root = str(patterning_home() / "runs")
    if args.condition in UNWEIGHTED:
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


def chi_config(path: str) -> tuple[str, int, Path]:
    """``(store, step, run folder)`` of a ``patterning run susceptibilities`` config of one
    model (its last checkpoint is read)."""
    cfg = json.loads(Path(path).read_text())
    last = cfg["checkpoints"][-1]
    return cfg["store"], int(last["step"]), Path(last["path"]).parent


def read_model(
    label: str,
    store: str,
    step: int,
    run_dir: Path,
    reference: tuple[str, int | None],
    ref_loading: np.ndarray | None,
    config,
    outline: np.ndarray,
    counting,
) -> dict:
    """One row of the readings table (module docstring; ``outline_reading``).
    ``reference``: ``(store, step)`` of the reference's χ, or ``(store, None)`` of the first
    model's when the reference's χ store is not at hand: the model is then read alone (no
    reading beyond the initialization, none against the reference's mode). Either way its
    workload (data and probes) must be that store's."""
    from patterning_core.experiments.spacing.fin_store import check_same_workload
    from patterning_core.experiments.spacing.outline_reading import outline_reading
    from patterning_core.model.checkpoints import checkpoint_path, load_checkpoint
    from patterning_core.model.transformer import loss_per_token

    units = outline_units(store)
    if not np.array_equal(units, outline):
        raise SystemExit(f"{store} has other probe units than the reference.")
    check_same_workload(store, (reference[0], 0))
    _, positions, _, _ = fin_inputs(store, step, config)
    ckpt = load_checkpoint(checkpoint_path(run_dir, step), config)
    tokens, targets = counting
    with torch.no_grad():
        loss = loss_per_token(ckpt.params, tokens, config, fused=True).numpy()
    alone = reference[1] is None
    reading = outline_reading(
        read_stats(store, step),
        None if alone else read_stats(reference[0], 0),
        positions,
        units,
        ref_loading,
        loss,
        targets,
    )
    return {"label": label, "store": store, "step": step, "run_dir": str(run_dir), **reading}


def read(args: argparse.Namespace) -> int:
    from patterning_core.data.corpus import prepare_lm_data
    from patterning_core.data.lm_data import OUTLINE_PROBE_SEED
    from patterning_core.data.outline import outline_sequences
    from patterning_core.experiments.spacing.counting import counting_targets
    from patterning_core.experiments.spacing.fin_store import fin_loading

    torch.set_num_threads(args.threads)
    config = preset(args.preset)
    models = []
    for item in args.condition:
        label, _, path = item.partition("=")
        models.append((label, *chi_config(path)))
    reference = ref_loading = ref_fin = None
    if args.reference:
        ref_store, ref_step, ref_run = chi_config(args.reference)
        reference = (ref_store, ref_step)
        ref_stats = read_stats(ref_store, ref_step)
        n = ref_stats.sizes["chain"]
        outline = outline_units(ref_store)
        ref_chi, ref_loss = fin_chains._chi(
            ref_stats, range(n // 2, n), outline, None, "restricted"
        )
        _, positions, _, _ = fin_inputs(ref_store, ref_step, config)
        ref_fin = read_fin(ref_chi, positions[outline], ref_loss)
        ref_loading = fin_loading(ref_chi, ref_fin["mode"])
        models.insert(0, ("reference", ref_store, ref_step, ref_run))
    elif not models:
        raise SystemExit("read needs --reference or at least one --condition.")
    else:
        outline = outline_units(models[0][1])
        reference = (models[0][1], None)  # read alone; workloads checked against it
    data = prepare_lm_data(config.n_ctx, config.d_vocab, whitespace="split")
    tokens = outline_sequences(data.tokenizer, args.seqs, config.n_ctx, seed=OUTLINE_PROBE_SEED)
    counting = (tokens, counting_targets(tokens.numpy(), data.token_strings))
    rows = [
        read_model(label, store, step, run, reference, ref_loading, config, outline, counting)
        for label, store, step, run in models
    ]
    if args.publish:
        publish_chi(models, config, outline, Path(args.publish))
    command = " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "command": command,
        "reference_mode_chains_8_15": None if ref_fin is None else int(ref_fin["mode"]),
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1, default=_jsonable))
    text = readings_report(info)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def publish_chi(models: list[tuple], config, outline: np.ndarray, out: Path) -> None:
    """Every model's restricted χ on the outline probe units, all chains pooled, as netCDF:
    ``chi`` ``(model, component, unit)`` (as stored: no nβ factor; the readings standardize
    each component's row), ``probe_loss`` ``(model, unit)`` (posterior mean loss of each
    unit), with the units' coordinates and their run position (NaN outside runs), so that
    the fin metric and the weights' class means can be recomputed without this code."""
    from patterning_core.store.chi_store import plain_string_coords

    chis, losses = [], []
    for _, store, step, _ in models:
        stats = read_stats(store, step)
        chi, loss = fin_chains._chi(stats, range(stats.sizes["chain"]), outline, None, "restricted")
        chis.append(chi.transpose("component", "unit").astype(np.float32))
        losses.append(loss.astype(np.float32))
    _, positions, _, ds = fin_inputs(models[0][1], models[0][2], config)
    chi = xr.concat(chis, dim="model").assign_coords(model=[m[0] for m in models])
    chi = chi.assign_coords(run_position=("unit", positions[outline]))
    out_ds = xr.Dataset(
        {"chi": chi, "probe_loss": (("model", "unit"), np.stack(losses))},
        attrs={
            "estimator": "restricted",
            "n_beta": float(ds.attrs["n_beta"]),
            "steps": json.dumps({m[0]: int(m[2]) for m in models}),
            "workload": ds.attrs["workload"],
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    plain_string_coords(out_ds).to_netcdf(out)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value))


def readings_report(info: dict) -> str:
    def pm(value, signed: bool = False) -> str:
        if value is None:
            return "—"
        mean, sd = value
        return f"{mean:+.3f} ± {sd:.3f}" if signed else f"{mean:.2f} ± {sd:.2f}"

    def num(value, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    mode = info["reference_mode_chains_8_15"]
    against = f"mode {mode}; disjoint chains" if mode is not None else "no reference read: none"
    lines = [
        "# The outline fin of retrained models, read off their χ",
        "",
        "Written by `scripts/fin_outline_suppress.py read` (see its docstring):",
        "",
        f"    .venv/bin/python scripts/fin_outline_suppress.py {info['command']}",
        "",
        "Every model's χ at its last checkpoint, restricted estimator on the outline probe "
        "units, read as the reference's: fin metric over 4-chain sets (mean ± sd; also "
        "controlled for each unit's posterior mean loss, partial Spearman) and of "
        "chains 0–7; the fin mode found again between 4-chain sets; beyond the reference's "
        "initialization (4-chain sets) and its null (the initialization's set i against its set "
        "i + 1); |cos| of the "
        f"fin mode of chains 0–7 with the reference's fin mode of chains 8–15 ({against}); "
        "the share of the "
        "standardized χ (chains 0–7) along that reference loading. Losses (nats) on 64 "
        "held-out outline sequences: markers after their run, and a space that continues a "
        "run after 1–2 spaces and after 3 or more (each model's weights: its weights record).",
        "",
        "| model | fin metric, 4 chains | loss-controlled | 8 chains (mode) | found again | "
        "beyond init | null | "
        "cos with reference mode | share along it | marker loss | space loss after 1–2 | "
        "after 3+ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in info["rows"]:
        lines.append(
            f"| {r['label']} | {pm(r['metric_4'])} | {pm(r['partial_4'])} | "
            f"{r['metric_8']:.2f} ({r['mode_8']}) | "
            f"{pm(r['found_again_4'])} | {pm(r['beyond_init_4'], True)} | "
            f"{pm(r['null_4'], True)} | "
            f"{num(r['cosine_with_reference_mode'], '.2f')} | "
            f"{num(r['share_along_reference_mode'], '.3f')} | "
            f"{r['marker_loss']:.3f} | {r['space_loss_after_1_2']:.3f} | "
            f"{r['space_loss_after_3_plus']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def summary(args: argparse.Namespace) -> int:
    """Every reading the manifest names, against its seed's baseline and its control
    (``outline_summary``): ``<out>.json`` (the spacing experiments' ``results.json`` form,
    more keys), ``<out>.md`` and the plot ``<out>.png``."""
    from patterning_core.experiments.spacing.outline_summary import (
        outline_summary,
        plot_outline_summary,
        summary_report,
    )

    manifest = json.loads(Path(args.manifest).read_text())
    base = Path(args.manifest).parent
    entries = []
    for item in manifest["runs"]:
        rows = json.loads((base / item["readings"]).read_text())["rows"]
        match = [r for r in rows if r["label"] == item["label"]]
        if len(match) != 1:
            raise SystemExit(f"{item['readings']} has no single row labelled {item['label']!r}.")
        entries.append({**item, "reading": match[0]})
    result = outline_summary(entries, resolution=manifest.get("resolution", 0.15))
    result = {
        "command": " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "probe_tokens": manifest["probe_tokens"],
        "checkpoints": manifest["checkpoints"],
        **result,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot = plot_outline_summary(result, out.with_suffix(".png"))
    text = (
        "# The outline fin over seeds and doses\n\n"
        "Written by `scripts/fin_outline_suppress.py summary` from the readings its manifest "
        "names:\n\n"
        f"    .venv/bin/python scripts/fin_outline_suppress.py {result['command']}\n\n"
        "Fin metric: mean ± sd over a model's 4-chain χ sets at its last checkpoint; change "
        "against the same seed's baseline; losses (nats) on 64 held-out outline sequences "
        "(spaces that continue a run, markers after their run, spaces after 3 or more).\n\n"
        + summary_report(result)
        + f"\n![fin metric per seed]({plot.name})\n"
    )
    out.with_suffix(".md").write_text(text)
    print(text)
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
    w.add_argument(
        "--amplify", action="store_true", help="the opposite sign (files chi_amplify, ...)"
    )
    w.add_argument("--out", required=True, help="<out>.json and <out>.md")
    b = sub.add_parser("rebuild", help="the weights files again, from a weights record")
    b.add_argument("--record", required=True, help="the weights command's <out>.json")
    b.add_argument("--train-config", required=True, help="the reference's training config")
    b.add_argument("--alpha", type=float, help="the dose α (default: the record's)")
    b.add_argument("--out", help="with another --alpha: <out>.json and <out>.md, a new record")
    t = sub.add_parser("train", help="retrain one condition")
    t.add_argument("--condition", choices=CONDITIONS, required=True)
    t.add_argument("--train-config", required=True)
    t.add_argument("--weights", help="the weights command's <out>.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("read", help="read every model's fin and counting losses")
    r.add_argument("--preset", required=True)
    r.add_argument("--reference", help="the reference's χ config (none: each model read alone)")
    r.add_argument("--condition", nargs="*", default=[], help="LABEL=CHI_CONFIG")
    r.add_argument("--seqs", type=int, default=64)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", required=True, help="<out>.json and <out>.md")
    r.add_argument("--publish", help="also write every model's χ on the outline units (.nc)")
    m = sub.add_parser("summary", help="every seed's readings against baselines and controls")
    m.add_argument("--manifest", required=True, help="JSON: the runs and their readings")
    m.add_argument("--out", required=True, help="<out>.json, <out>.md and <out>.png")
    args = parser.parse_args(argv)
    if args.command == "train" and args.condition not in UNWEIGHTED and not args.weights:
        parser.error(f"--condition {args.condition} needs --weights")
    commands = {
        "weights": make_weights,
        "rebuild": rebuild,
        "train": train,
        "read": read,
        "summary": summary,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
