"""The outline fin experiment on three seeds, trained and sampled on a GPU machine.

``scripts/fin_outline_suppress.py`` ran the outline model's χ-suppress experiment on one
seed on 2 CPU cores (about 30 minutes per model and condition). This script runs the whole
design on a GPU in one pass, every model and χ from scratch, and does the readings there:

1. the reference (seed 0) and the baselines of seeds 1 and 2 on the outline recipe
   (``docs/examples/spacing_fin_outline_train.json``), and the data edit that collapses
   runs of spaces (all three seeds);
2. χ of the reference at steps 0 and 3,000 (``--ref-chains``, 32 by default), of the
   initializations of seeds 1 and 2 and of every other model's last checkpoint
   (``--chains``, 16), the workload of the outline χ configs (256 SGLD sequences, one
   corpus and 8 outline probe sequences, the demo sampler);
3. the weights from the reference's fin mode on its outline probe units (restricted χ, all
   chains; ``fin_weights`` with ``train_rows`` the outline rows), χ-suppress and its control
   at the same whitespace share, χ-amplify (the opposite sign) and its control;
4. those four conditions retrained on every seed (same initialization and data order);
5. every model read as ``fin_outline_suppress.py read`` reads it (restricted χ on the outline
   units, 4- and 8-chain sets, beyond its seed's initialization, the fin mode against the
   reference's on disjoint chains, counting losses on 64 held-out outline sequences).

Three steps, the middle one on the GPU machine (``run`` of the device tool; no Prefect, Dask
or Zarr there, and its Python's standard library is another corpus, so the tokenized data
travel in the bundle):

    .venv/bin/python scripts/fin_outline_seeds.py bundle --out .gpu_bundle/fin_outline
    # on the GPU machine:  python3 scripts/fin_outline_seeds.py device \\
    #     --bundle .gpu_bundle/fin_outline --out $OUT
    .venv/bin/python scripts/fin_outline_seeds.py report --results DIR/results.json \\
        --out docs/results/spacing/fin_outline/seeds

``device`` writes ``results.json`` (weights, readings, timings), the pooled χ of every model
(``chi_pooled.npz``: restricted and two-run, component × probe unit, with the unit
coordinates), the reference's per-chain statistics at both steps and the final checkpoints
with their training logs (``runs.tar``). With ``--deadline S`` no job is waited for after S
seconds: the running ones are stopped and whatever finished is read and packed.

Timings on an H200 (16 cores; 2026-12-04, before the readout loss took one chunk per call
off the CPU): 12 workers; the six unweighted trainings 82 s each, run together; χ of 16
chains 279–289 s each with nine together, and 72 s for 8 chains alone (process start
included). Both are launch-bound, not arithmetic-bound: the readout loss then ran in chunks
of 256 rows, 187k torch calls per SGLD draw of this workload (five run groups, 8 chains);
with one chunk per call 30k. The whole design did not fit one 10-minute call before that
change (the reference's 32-chain χ was still running at 400 s). Measure one store first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
import traceback
import types
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:  # the GPU machine has no Zarr; nothing here reads or writes a store
    import zarr  # noqa: F401
except ImportError:  # pragma: no cover - only there
    sys.modules["zarr"] = types.ModuleType("zarr")

TRAIN_CONFIG = ROOT / "docs" / "examples" / "spacing_fin_outline_train.json"
WORKLOAD = {"kind": "transformer", "sgld_seqs": 256, "probe_seqs": 1, "probe_outline": 8}
SAMPLER = {
    "step_size": 1e-3,
    "n_beta": 30.0,
    "localization": 300.0,
    "num_draws": 100,
    "num_burnin": 0,
    "steps_between_draws": 1,
    "batch_size": 4,
    "seed": 0,
}
SEEDS = (0, 1, 2)
WEIGHTED = ("chi_suppress", "control_dose", "chi_amplify", "control_amplify")
COUNTING_SEQS = 64


# ----------------------------------------------------------------------------- bundle


def bundle(args: argparse.Namespace) -> int:
    """The tokenized data, probes and labels the GPU machine needs, into ``args.out``."""
    from patterning_core.data.corpus import prepare_lm_data
    from patterning_core.data.lm_data import OUTLINE_PROBE_SEED, load_lm_tokens, probe_kinds
    from patterning_core.data.outline import outline_sequences
    from patterning_core.experiments.spacing.counting import counting_targets
    from patterning_core.experiments.spacing.fin import run_positions
    from patterning_core.experiments.spacing.fin_weights import train_fin_labels
    from patterning_core.model.checkpoints import save_checkpoint
    from patterning_core.model.transformer import init_params, preset
    from patterning_core.store.workloads import build_workload

    spec = json.loads(TRAIN_CONFIG.read_text())
    config = preset(spec["preset"])
    data = spec["data"]
    tokens = load_lm_tokens(data, config)
    collapsed = load_lm_tokens({**data, "collapse_spaces": True}, config)
    start, stop = tokens.outline_rows
    classes, whitespace = train_fin_labels(tokens.train, tokens.token_strings)
    names, index = np.unique(classes, return_inverse=True)
    workload = {**WORKLOAD, "data": data}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    init = out / "init_seed0.safetensors"
    save_checkpoint(init, init_params(config, 0), config, 0, 0)
    work = build_workload(workload, init)
    init.unlink()
    kinds = probe_kinds(workload)
    sequence = np.asarray(work.unit_coords["sequence"])
    outline_units = np.isin(sequence, np.flatnonzero(kinds == "outline"))
    corpus = prepare_lm_data(config.n_ctx, config.d_vocab, whitespace="split")
    held_out = outline_sequences(
        corpus.tokenizer, COUNTING_SEQS, config.n_ctx, seed=OUTLINE_PROBE_SEED
    )
    targets = counting_targets(held_out.numpy(), corpus.token_strings)
    (sgld_data,) = work.data if isinstance(work.data, tuple) else (work.data,)
    (probes,) = work.probes if isinstance(work.probes, tuple) else (work.probes,)
    arrays = {
        "train": tokens.train.numpy().astype(np.int16),
        "train_collapsed": collapsed.train.numpy().astype(np.int16),
        "val": tokens.val[:256].numpy().astype(np.int16),
        "class_index": index.reshape(classes.shape).astype(np.uint8),
        "whitespace": whitespace,
        "sgld_data": sgld_data.numpy(),
        "probes": probes.numpy(),
        "positions": run_positions(probes, tokens.token_strings).ravel(),
        "outline_units": outline_units,
        "counting_tokens": held_out.numpy(),
        **{f"unit_{k}": _plain(v) for k, v in work.unit_coords.items()},
        **{f"counting_{k}": v for k, v in targets.items()},
    }
    np.savez_compressed(out / "arrays.npz", **arrays)
    meta = {
        "preset": spec["preset"],
        "data": data,
        "train": spec["train"],
        "workload": workload,
        "sampler": SAMPLER,
        "components": list(work.components),
        "class_names": names.tolist(),
        "outline_rows": [start, stop],
        "token_strings": tokens.token_strings,
    }
    (out / "meta.json").write_text(json.dumps(meta))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"bundle {out}: {size:.1f} MiB; outline rows {start}–{stop - 1}")
    return 0


def _plain(values) -> np.ndarray:
    """An array ``np.load`` reads without pickle (text as fixed-width unicode)."""
    array = np.asarray(values)
    return array.astype(str) if array.dtype == object else array


class Bundle:
    """The bundle read back (``bundle``'s files). Arrays are read on first use: a χ job
    needs the probes and SGLD data, not the 40,000 training rows."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.meta = json.loads((folder / "meta.json").read_text())
        self._file = folder / "arrays.npz"
        with np.load(self._file) as f:
            self.names = list(f.files)
        self._read: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        if name not in self._read:
            with np.load(self._file) as f:
                self._read[name] = f[name]
        return self._read[name]

    def tokens(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.array(name).astype(np.int64))

    def _prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        return {k.removeprefix(prefix): self.array(k) for k in self.names if k.startswith(prefix)}

    @property
    def unit_coords(self) -> dict[str, np.ndarray]:
        return self._prefixed("unit_")

    @property
    def counting(self) -> dict[str, np.ndarray]:
        return self._prefixed("counting_")


# ----------------------------------------------------------------------------- jobs


def _config(meta: dict):
    from patterning_core.model.transformer import preset

    return preset(meta["preset"])


def train_job(bundle_dir: str, label: str, seed: int, data: str, weights: str | None, work: str):
    """Train one model into ``work/runs/label`` on the GPU; returns its run folder."""
    from patterning_core.model.training import TrainConfig, train

    torch.set_num_threads(1)
    b = Bundle(bundle_dir)
    settings = {**b.meta["train"], "seed": seed}
    settings["checkpoint_steps"] = tuple(settings["checkpoint_steps"])
    rho = None if weights is None else torch.from_numpy(np.load(weights))
    run_dir = Path(work) / "runs" / label
    started = time.perf_counter()
    train(
        _config(b.meta),
        b.tokens("train" if data == "normal" else "train_collapsed"),
        TrainConfig(**settings),
        weights=rho,
        run_dir=run_dir,
        progress=False,
        val_tokens=b.tokens("val"),
        device=_device(),
    )
    return {"run_dir": str(run_dir), "seconds": time.perf_counter() - started}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def chi_job(bundle_dir: str, label: str, checkpoint: str, chains: int, work: str) -> dict:
    """χ statistics of one checkpoint (all components, the full run) into
    ``work/stats/label.npz``."""
    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components, make_loss_fn
    from patterning_core.sampling.config import SamplerConfig

    torch.set_num_threads(1)
    b = Bundle(bundle_dir)
    config, device = _config(b.meta), _device()
    params = {k: v.to(device) for k, v in load_checkpoint(checkpoint, config).params.items()}
    comps = components(config)
    comps = {c: {k: m.to(device) for k, m in comps[c].items()} for c in b.meta["components"]}
    sampler = SamplerConfig.from_dict({**b.meta["sampler"], "num_chains": chains})
    data, probes = b.tokens("sgld_data").to(device), b.tokens("probes").to(device)
    started, path = time.perf_counter(), "restricted heads"
    try:
        stats = sample_susceptibility_stats(
            TransformerLoss(config), params, data, probes, comps, sampler, progress=False
        )
    except Exception:
        path = "generic (restricted heads failed: " + traceback.format_exc(limit=1) + ")"
        stats = sample_susceptibility_stats(
            make_loss_fn(config), params, data, probes, comps, sampler, progress=False
        )
    out = Path(work) / "stats" / f"{label}.npz"
    save_stats(stats, out)
    return {"stats": str(out), "seconds": time.perf_counter() - started, "path": path}


def save_stats(stats, path: Path) -> None:
    """A statistics Dataset as ``.npz`` (variables with their dims, coordinates, attrs).
    Not netCDF: the GPU machine has no netCDF-4 engine, and netCDF-3 (scipy) holds no int64
    coordinates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, layout = {}, {"vars": {}, "coords": {}, "attrs": dict(stats.attrs)}
    for name, var in stats.data_vars.items():
        arrays[f"v_{name}"] = var.values
        layout["vars"][name] = list(var.dims)
    for name, coord in stats.coords.items():
        arrays[f"c_{name}"] = np.asarray(coord.values)
        layout["coords"][name] = list(coord.dims)
    arrays["layout"] = np.frombuffer(json.dumps(layout, default=list).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def load_stats(path: str | Path):
    import xarray as xr

    with np.load(path) as f:
        layout = json.loads(bytes(f["layout"]).decode())
        data_vars = {n: (dims, f[f"v_{n}"]) for n, dims in layout["vars"].items()}
        coords = {n: (dims, f[f"c_{n}"]) for n, dims in layout["coords"].items()}
    return xr.Dataset(data_vars, coords=coords, attrs=layout["attrs"])


# ----------------------------------------------------------------------------- weights


def make_weights(b: Bundle, ref_stats, work: Path) -> dict:
    """The four weightings from the reference's fin mode (module docstring, step 3)."""
    from patterning_core.experiments.spacing import fin_chains
    from patterning_core.experiments.spacing.fin_store import read_fin
    from patterning_core.experiments.spacing.fin_weights import fin_weights

    units = b.array("outline_units")
    n = ref_stats.sizes["chain"]
    chi, loss = fin_chains._chi(ref_stats, range(n), units, None, "restricted")
    fin = read_fin(chi, b.array("positions")[units], loss)
    train = b.tokens("train")
    start, stop = b.meta["outline_rows"]
    rows = np.zeros(train.shape[0], dtype=bool)
    rows[start:stop] = True
    names = np.array(b.meta["class_names"])
    labels = (names[b.array("class_index")], b.array("whitespace"))
    info: dict = {
        "chains": n,
        "units": int(units.sum()),
        "fin": {k: fin[k] for k in ("mode", "metric", "rho", "explained_variance")},
        "outline_rows": [start, stop],
        "files": {},
    }
    for amplify, (chi_name, control_name) in (
        (False, ("chi_suppress", "control_dose")),
        (True, ("chi_amplify", "control_amplify")),
    ):
        sign_fin = {**fin, "rho": -fin["rho"]} if amplify else fin
        result = fin_weights(
            chi,
            float(ref_stats.attrs["n_beta"]),
            sign_fin,
            b.tokens("probes"),
            train,
            b.meta["token_strings"],
            1.0,
            probe_units=units,
            train_rows=rows,
            train_labels=labels,
        )
        rho = result.weights["chi_suppress"]
        inside = np.sort(rho[rows].ravel())
        tenth = max(1, inside.size // 10)
        summary = dict(result.summary)
        summary["decile_ratio_outline_rows"] = float(
            inside[-tenth:].mean() / max(inside[:tenth].mean(), 1e-12)
        )
        info[chi_name] = _jsonable_tree(summary)
        for name, key in ((chi_name, "chi_suppress"), (control_name, "control_dose")):
            path = work / "weights" / f"{name}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, result.weights[key])
            info["files"][name] = str(path)
    return info


def _jsonable_tree(value):
    if isinstance(value, dict):
        return {str(k): _jsonable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_tree(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


# ----------------------------------------------------------------------------- readings


def read_model(
    b: Bundle,
    label: str,
    stats,
    init_stats,
    ref_loading: np.ndarray,
    checkpoint: str,
) -> dict:
    """One model's readings (``outline_reading``, as ``fin_outline_suppress.py read``)."""
    from patterning_core.experiments.spacing.outline_reading import outline_reading
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.transformer import loss_per_token

    config = _config(b.meta)
    ckpt = load_checkpoint(checkpoint, config)
    with torch.no_grad():
        loss = loss_per_token(ckpt.params, b.tokens("counting_tokens"), config, fused=True)
    reading = outline_reading(
        stats,
        init_stats,
        b.array("positions"),
        b.array("outline_units"),
        ref_loading,
        loss.numpy(),
        b.counting,
    )
    return _jsonable_tree({"label": label, **reading})


# ----------------------------------------------------------------------------- device


class Log:
    def __init__(self, path: Path):
        self.path, self.start = path, time.perf_counter()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f} s] {message}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def device(args: argparse.Namespace) -> int:
    """Steps 1–5 of the module docstring, in parallel worker processes."""
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "log.txt")
    b = Bundle(args.bundle)
    if args.steps is not None:  # a short rehearsal of the whole pipeline
        b.meta["train"] = {**b.meta["train"], "steps": args.steps, "warmup_steps": 1}
        b.meta["train"]["checkpoint_steps"] = [0, args.steps]
    if args.draws is not None:
        b.meta["sampler"] = {**b.meta["sampler"], "num_draws": args.draws}
    Path(work / "bundle").mkdir(exist_ok=True)
    (work / "bundle" / "meta.json").write_text(json.dumps(b.meta))
    arrays = work / "bundle" / "arrays.npz"
    if not arrays.exists():
        arrays.symlink_to(Path(args.bundle).resolve() / "arrays.npz")
    bundle_dir = str(work / "bundle")
    last_step = b.meta["train"]["steps"]
    info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    log(f"start on {info['device']}, {args.workers} workers, last step {last_step}")
    results: dict = {"meta": {k: b.meta[k] for k in ("preset", "data", "train", "workload")}}
    results.update(info, sampler=b.meta["sampler"], jobs={}, readings={})
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"))
    pending: dict[Future, tuple[str, str]] = {}
    runs: dict[str, str] = {}
    stats_files: dict[str, str] = {}

    def submit_train(label: str, seed: int, data: str, weights: str | None = None) -> None:
        fut = pool.submit(train_job, bundle_dir, label, seed, data, weights, str(work))
        pending[fut] = ("train", label)

    def submit_chi(label: str, run_label: str, step: int, chains: int) -> None:
        from patterning_core.model.checkpoints import checkpoint_path

        ckpt = str(checkpoint_path(runs[run_label], step))
        pending[pool.submit(chi_job, bundle_dir, label, ckpt, chains, str(work))] = ("chi", label)

    for seed in SEEDS:
        submit_train(f"baseline_seed{seed}", seed, "normal")
        submit_train(f"collapse_whitespace_seed{seed}", seed, "collapsed")
    weights_info = None
    while pending:
        done, _ = wait(list(pending), timeout=5, return_when=FIRST_COMPLETED)
        if args.deadline is not None and log.elapsed > args.deadline and not done:
            log(f"deadline ({args.deadline} s): {len(pending)} jobs left undone")
            results["undone"] = sorted(f"{kind} {label}" for kind, label in pending.values())
            break
        for fut in done:
            kind, label = pending.pop(fut)
            try:
                got = fut.result()
            except Exception:
                log(f"{kind} {label} FAILED:\n{traceback.format_exc()}")
                results["jobs"][f"{kind} {label}"] = {"failed": traceback.format_exc()}
                continue
            results["jobs"][f"{kind} {label}"] = got
            log(f"{kind} {label} done in {got['seconds']:.1f} s")
            if kind == "train":
                runs[label] = got["run_dir"]
                if label == "baseline_seed0":
                    submit_chi("reference_step0", label, 0, args.ref_chains)
                    submit_chi("reference", label, last_step, args.ref_chains)
                elif label.startswith("baseline_seed"):
                    submit_chi(f"init_seed{label[-1]}", label, 0, args.chains)
                    submit_chi(label, label, last_step, args.chains)
                else:
                    submit_chi(label, label, last_step, args.chains)
            else:
                stats_files[label] = got["stats"]
                if label == "reference":
                    weights_info = make_weights(b, load_stats(got["stats"]), work)
                    results["weights"] = {k: v for k, v in weights_info.items() if k != "files"}
                    log(f"weights: fin mode {weights_info['fin']}")
                    for seed in SEEDS:
                        for name in WEIGHTED:
                            path = weights_info["files"][name]
                            submit_train(f"{name}_seed{seed}", seed, "normal", path)
            _write_json(out / "results.json", results)
    if pending:  # past the deadline: stop the running jobs too, so the process can exit
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
    pool.shutdown(wait=not pending, cancel_futures=True)
    log("sampling and training done; reading")
    read_all(b, runs, stats_files, results, log, last_step)
    _write_json(out / "results.json", results)
    pack(out, work, runs, stats_files, b)
    log("done")
    return 0


def read_all(b: Bundle, runs: dict, stats_files: dict, results: dict, log, last_step) -> None:
    from patterning_core.experiments.spacing import fin_chains
    from patterning_core.experiments.spacing.fin_store import fin_loading, read_fin
    from patterning_core.model.checkpoints import checkpoint_path

    if "reference" not in stats_files:
        log("no χ of the reference: nothing to read")
        return
    units = b.array("outline_units")
    ref = load_stats(stats_files["reference"])
    n = ref.sizes["chain"]
    ref_chi, ref_loss = fin_chains._chi(ref, range(n // 2, n), units, None, "restricted")
    ref_fin = read_fin(ref_chi, b.array("positions")[units], ref_loss)
    ref_loading = fin_loading(ref_chi, ref_fin["mode"])
    results["reference_mode_second_half"] = int(ref_fin["mode"])
    inits = {0: "reference_step0", 1: "init_seed1", 2: "init_seed2"}
    for label in sorted(stats_files):
        if label in inits.values():
            continue
        seed = 0 if label == "reference" else int(label[-1])
        run = "baseline_seed0" if label == "reference" else label
        if inits[seed] not in stats_files:
            log(f"read {label}: no initialization statistics; skipped")
            continue
        try:
            results["readings"][label] = read_model(
                b,
                label,
                load_stats(stats_files[label]),
                load_stats(stats_files[inits[seed]]),
                ref_loading,
                str(checkpoint_path(runs[run], last_step)),
            )
            r = results["readings"][label]
            log(
                f"read {label}: fin metric {r['metric_4'][0]:.2f} ± {r['metric_4'][1]:.2f}, "
                f"deep-space loss {r['space_loss_after_3_plus']:.3f}"
            )
        except Exception:
            log(f"read {label} FAILED:\n{traceback.format_exc()}")


def pack(out: Path, work: Path, runs: dict, stats_files: dict, b: Bundle) -> None:
    """The files that travel back (module docstring)."""
    from patterning_core.estimators.susceptibility import (
        chi_from_stats,
        restricted_chi_from_stats,
    )
    from patterning_core.model.checkpoints import list_checkpoints

    pooled = {f"unit_{k}": v for k, v in b.unit_coords.items()}
    pooled["outline_units"] = b.array("outline_units")
    for label, path in stats_files.items():
        stats = load_stats(path)
        for name, estimator in (
            ("restricted", restricted_chi_from_stats),
            ("two_run", chi_from_stats),
        ):
            chi = estimator(stats).transpose("component", "unit")
            pooled[f"{label}__{name}"] = chi.values.astype(np.float32)
            pooled["component"] = np.asarray(chi.component.values).astype(str)
    np.savez_compressed(out / "chi_pooled.npz", **pooled)
    for label in ("reference", "reference_step0"):
        if label in stats_files:
            stats = load_stats(stats_files[label])
            for name, var in stats.data_vars.items():  # under the 16 MiB a file may bring back
                if var.size > 100_000:
                    stats[name] = var.astype(np.float32)
            stats.attrs["stored_as"] = "per-unit arrays as float32 (float64 sums, rounded)"
            save_stats(stats, out / f"{label}_stats.npz")
    with tarfile.open(out / "runs.tar", "w") as tar:
        for label, run_dir in runs.items():
            ckpts = list_checkpoints(run_dir)
            if ckpts:
                tar.add(ckpts[-1][1], arcname=f"{label}/{ckpts[-1][1].name}")
            logfile = Path(run_dir) / "train_log.json"
            if logfile.exists():
                tar.add(logfile, arcname=f"{label}/train_log.json")


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_jsonable_tree))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- report


def report(args: argparse.Namespace) -> int:
    """The readings of every model, per seed, as Markdown and JSON."""
    results = json.loads(Path(args.results).read_text())
    readings = results["readings"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# The outline fin on three seeds: χ-suppress, χ-amplify, their controls, the data edit",
        "",
        "Written by `scripts/fin_outline_seeds.py report` from the `device` pass's "
        f"`results.json` ({results.get('device', '?')}); see the script's docstring.",
        "",
        "| model | fin metric, 4-chain sets | loss-controlled | 8 chains (mode) | found again | "
        "beyond init | null | cos with reference mode | marker loss | space loss after 1–2 | "
        "after 3+ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pm(value, signed: bool = False) -> str:
        if value is None:
            return "—"
        mean, sd = value
        return f"{mean:+.3f} ± {sd:.3f}" if signed else f"{mean:.2f} ± {sd:.2f}"

    for label in sorted(readings, key=_order):
        r = readings[label]
        lines.append(
            f"| {label} | {pm(r['metric_4'])} | {pm(r['partial_4'])} | "
            f"{r['metric_8']:.2f} ({r['mode_8']}) | {pm(r['found_again_4'])} | "
            f"{pm(r['beyond_init_4'], True)} | {pm(r['null_4'], True)} | "
            f"{r['cosine_with_reference_mode']:.2f} | {r['marker_loss']:.3f} | "
            f"{r['space_loss_after_1_2']:.3f} | {r['space_loss_after_3_plus']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


def _order(label: str) -> tuple:
    from patterning_core.experiments.spacing.outline_reading import CONDITIONS

    conditions = ["reference", *CONDITIONS]
    stem = label.rsplit("_seed", 1)[0]
    seed = 0 if label == "reference" else int(label.rsplit("_seed", 1)[1])
    return (seed, conditions.index(stem) if stem in conditions else 99, label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bundle", help="the data the GPU machine needs")
    p.add_argument("--out", required=True)
    d = sub.add_parser("device", help="train, sample and read (on the GPU machine)")
    d.add_argument("--bundle", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--work", default="/tmp/fin_outline_seeds")
    d.add_argument("--workers", type=int, default=10)
    d.add_argument("--chains", type=int, default=16)
    d.add_argument("--ref-chains", type=int, default=32)
    d.add_argument(
        "--deadline", type=float, help="seconds after which no job is waited for (then read)"
    )
    d.add_argument("--steps", type=int, help="rehearsal: train this many steps")
    d.add_argument("--draws", type=int, help="rehearsal: this many SGLD draws")
    r = sub.add_parser("report", help="the readings as tables")
    r.add_argument("--results", required=True)
    r.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return {"bundle": bundle, "device": device, "report": report}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
