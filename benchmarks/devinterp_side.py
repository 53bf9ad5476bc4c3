"""devinterp 2.0.1's ``susceptibilities`` on a patterning checkpoint, for the χ benchmark.

Two halves, one file:

- :func:`ensure_devinterp_venv` runs under the *project's* python (stdlib only, no devinterp
  import): it creates the throwaway venv ``.bench/devinterp-venv`` (CPU torch pinned first,
  then devinterp with a constraints file so pip can never swap torch for a CUDA build) and
  returns the venv's python. devinterp never becomes a dependency of the project.
- the CLI runs *inside* that venv::

      .bench/devinterp-venv/bin/python benchmarks/devinterp_side.py run \\
          --checkpoint CKPT.safetensors --data DATA.npz --out OUT.npz [--seed S] [--draws N]

  It rebuilds the attention-only transformer as a plain ``nn.Module`` (same maths as
  ``patterning_core.model.transformer``), calls ``devinterp.slt.susceptibilities.susceptibilities``
  for the 16 head restrictions plus the full run, and writes χ in our unit order. See
  ``benchmarks/README_devinterp.md`` for what devinterp computes and how it differs from
  ``patterning_core.estimators.susceptibility``.

``python benchmarks/devinterp_side.py check --checkpoint C --data D`` compares the module's
per-token losses with ``patterning_core`` (run it with the project's python, which has both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_REL = Path(".bench") / "devinterp-venv"
TORCH_PIN = "torch==2.13.0+cpu"  # the CPU wheel on the project's machines (pip find-links)
DEVINTERP_PIN = "devinterp==2.0.1"
# Versions this benchmark was checked with (resolved by pip on 2026-11; devinterp's own
# requirements are lower bounds only). Torch is pinned so no CUDA build can come in.
CONSTRAINTS = (
    TORCH_PIN,
    DEVINTERP_PIN,
    "datasets==5.2.0",
    "huggingface_hub==2.4.0",
    "numcodecs==0.16.6",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "pyarrow==26.0.1",
    "pydantic==2.14.3",
    "safetensors==0.8.0",
    "tqdm==4.70.1",
    "transformers==5.23.0",
    "xarray==2026.9.0",
    "zarr==3.1.6",
)
INSTALLED_RECORD = "installed.txt"


# ----------------------------------------------------------------------------- venv (project side)


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_ok(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import devinterp.slt.susceptibilities, safetensors, torch; print(torch.__version__)"
    res = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return res.returncode == 0 and res.stdout.strip() == TORCH_PIN.split("==")[1]


def ensure_devinterp_venv(root: Path, *, quiet: bool = True) -> Path:
    """Create ``root/.bench/devinterp-venv`` if missing and return its python.

    ``root`` is the repository root; a path that already ends in ``.bench/devinterp-venv``
    is taken as the venv folder itself.

    Order matters: the CPU torch wheel is installed first and pinned by a constraints file
    for every later install, so resolving devinterp's ``torch>=2.0.1`` can never pull a CUDA
    build (gigabytes of nvidia packages). ``pip freeze`` of the result is written to
    ``installed.txt`` in the venv. Idempotent: an existing working venv is reused.
    """
    root = Path(root)
    venv = root if root.parts[-2:] == VENV_REL.parts else root / VENV_REL
    python = _venv_python(venv)
    if _venv_ok(python):
        return python
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    out = subprocess.DEVNULL if quiet else None

    def run(*args: str) -> None:
        subprocess.run(list(args), check=True, stdout=out)

    run(base, "-m", "venv", str(venv))
    constraints = venv / "constraints.txt"
    constraints.write_text("\n".join(CONSTRAINTS) + "\n")
    pip = (str(python), "-m", "pip", "install", "--disable-pip-version-check")
    pip += ("-qq",) if quiet else ()
    run(*pip, TORCH_PIN)
    run(*pip, "-c", str(constraints), DEVINTERP_PIN, "safetensors")
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True
    ).stdout
    (venv / INSTALLED_RECORD).write_text(freeze)
    if not _venv_ok(python):
        raise RuntimeError(
            f"the devinterp venv at {venv} does not import devinterp with {TORCH_PIN}; "
            f"see {venv / INSTALLED_RECORD} and delete the folder to rebuild it."
        )
    return python


# ----------------------------------------------------------------------------- model (in the venv)


def build_model(params: dict, config: dict):
    """A plain ``nn.Module`` computing what ``patterning_core.model.transformer.forward`` computes.

    ``named_parameters()`` are the checkpoint's names (``blocks.0.attn.W_Q`` …), so masks
    are keyed exactly like ours. No ``cfg`` attribute: devinterp would take the module for a
    TransformerLens model and call it with ``return_type=``.
    """
    import math

    import torch
    from torch import nn

    eps = float(config.get("ln_eps", 1e-5))

    def layer_norm(x, w, b):
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim=-1, keepdim=True)
        return xc * torch.rsqrt(var + eps) * w + b

    def project(x, W, b):  # x [B,T,D], W [H,D,d], b [H,d] -> [B,H,T,d]
        H, D, d = W.shape
        flat = x @ W.permute(1, 0, 2).reshape(D, H * d) + b.reshape(H * d)
        return flat.reshape(*x.shape[:-1], H, d).transpose(-2, -3)

    class Holder(nn.Module):
        pass

    class AttnOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_layers = int(config["n_layers"])
            for name, value in params.items():
                *path, leaf = name.split(".")
                owner: nn.Module = self
                for part in path:
                    if not hasattr(owner, part):
                        owner.add_module(part, Holder())
                    owner = getattr(owner, part)
                owner.register_parameter(leaf, nn.Parameter(value.detach().clone().float()))

        def forward(self, tokens):
            p = dict(self.named_parameters())
            T = tokens.shape[-1]
            resid = p["embed.W_E"][tokens] + p["pos.W_pos"][:T]
            for layer in range(self.n_layers):
                q_ = f"blocks.{layer}."
                x = layer_norm(resid, p[q_ + "ln.w"], p[q_ + "ln.b"])
                d_head = p[q_ + "attn.W_Q"].shape[-1]
                q = project(x, p[q_ + "attn.W_Q"], p[q_ + "attn.b_Q"]) / math.sqrt(d_head)
                k = project(x, p[q_ + "attn.W_K"], p[q_ + "attn.b_K"])
                mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
                pattern = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)
                v = project(x, p[q_ + "attn.W_V"], p[q_ + "attn.b_V"])
                z = (pattern @ v).transpose(-2, -3)
                W_O = p[q_ + "attn.W_O"]
                H, d, D = W_O.shape
                resid = (
                    resid
                    + z.reshape(*z.shape[:-2], H * d) @ W_O.reshape(H * d, D)
                    + p[q_ + "attn.b_O"]
                )
            x = layer_norm(resid, p["ln_final.w"], p["ln_final.b"])
            return x @ p["unembed.W_U"] + p["unembed.b_U"]

    return AttnOnly()


def per_token_loss(model, tokens):
    """``[B, T-1]``: unit ``(b, t)`` = −log p(tokens[b, t+1] | tokens[b, :t+1])."""
    import torch

    logp = torch.log_softmax(model(tokens)[..., :-1, :], dim=-1)
    return -torch.gather(logp, -1, tokens[..., 1:].unsqueeze(-1)).squeeze(-1)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """``(params, config)`` from a patterning safetensors checkpoint (no patterning import)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        params = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: not a patterning checkpoint")
    return params, json.loads(meta["config"])


def head_masks(model, config: dict) -> dict[str, dict]:
    """``{"L{l}H{h}": {param: bool mask}}``: head h's slice of W_Q/K/V/O and b_Q/K/V
    (not b_O, not LayerNorm), as ``patterning_core.model.transformer.components``."""
    import torch

    named = dict(model.named_parameters())
    out = {}
    for layer in range(int(config["n_layers"])):
        for head in range(int(config["n_heads"])):
            masks = {}
            for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
                name = f"blocks.{layer}.attn.{w}"
                m = torch.zeros(named[name].shape, dtype=torch.bool)
                m[head] = True
                masks[name] = m
            out[f"L{layer}H{head}"] = masks
    return out


# ----------------------------------------------------------------------------- devinterp run


def _padded(rows, multiple: int):
    """Rows repeated cyclically up to a multiple of ``multiple`` (devinterp evaluates each
    observable in whole batches of the sampling batch size)."""
    import numpy as np

    n = rows.shape[0]
    target = -(-n // multiple) * multiple
    return rows[np.arange(target) % n]


def run_devinterp(
    checkpoint: Path,
    data: Path,
    *,
    seed: int = 100,
    draws: int = 100,
    chains: int = 4,
    batch_size: int = 16,
    step_size: float = 1e-3,
    n_beta: float = 30.0,
    localization: float = 300.0,
    init_loss_batches: int = 32,
    heads: list[str] | None = None,
) -> dict:
    """devinterp's ``susceptibilities`` for every head; returns the arrays for ``OUT.npz``."""
    import resource
    import warnings

    import datasets
    import devinterp.slt.sampling as di_sampling
    import numpy as np
    import torch
    from devinterp.slt.susceptibilities import susceptibilities

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    params, config = load_checkpoint(checkpoint)
    model = build_model(params, config)
    arrays = np.load(data)
    train, probes = arrays["train"].astype(np.int64), arrays["probes"].astype(np.int64)
    phi_batch = arrays["phi_batch"].astype(np.int64) if "phi_batch" in arrays else None
    if phi_batch is None:  # NOT patterning_core's selection: pass phi_batch to compare
        phi_batch = train[np.random.default_rng(seed).permutation(len(train))[:batch_size]]
    if phi_batch.shape[0] % batch_size:
        raise ValueError(
            f"phi_batch has {phi_batch.shape[0]} rows; devinterp evaluates observables in "
            f"whole batches of {batch_size}: give a multiple of the batch size."
        )
    T = probes.shape[1]
    units_per_seq = T - 1

    def hf(rows):
        return datasets.Dataset.from_dict({"input_ids": rows.tolist()}).with_format("torch")

    train_ds, phi_ds = hf(train), hf(phi_batch)
    probe_rows = _padded(probes, batch_size)
    probe_ds = hf(probe_rows)
    observables = {
        "phi": (phi_ds, phi_batch.shape[0] // batch_size),
        "probes": (probe_ds, probe_rows.shape[0] // batch_size),
    }
    all_heads = head_masks(model, config)
    names = list(all_heads) if heads is None else list(heads)
    restrictions = {"full": None, **{n: all_heads[n] for n in names}}

    # Instrumentation only (no change to what devinterp computes): count SGLD steps through
    # the per-step micro-batch callback, and time the init-loss pass and the chains.
    counters = {"sgld_steps": 0, "init_loss_s": 0.0, "chains_s": 0.0, "chains": 0}
    real_chain, real_init = di_sampling.sample_single_chain, di_sampling._write_init_loss

    def counted_chain(*args, micro_callback=None, **kwargs):
        def micro(**kw):
            counters["sgld_steps"] += 1
            if micro_callback is not None:
                micro_callback(**kw)

        t0 = time.perf_counter()
        try:
            return real_chain(*args, micro_callback=micro, **kwargs)
        finally:
            counters["chains_s"] += time.perf_counter() - t0
            counters["chains"] += 1

    def timed_init(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_init(*args, **kwargs)
        finally:
            counters["init_loss_s"] += time.perf_counter() - t0

    di_sampling.sample_single_chain = counted_chain
    di_sampling._write_init_loss = timed_init

    settings = dict(
        lr=step_size,
        n_beta=n_beta,
        localization=localization,
        num_chains=chains,
        num_draws=draws,
        num_burnin_steps=0,
        num_steps_bw_draws=1,
        batch_size=batch_size,
        num_init_loss_batches=init_loss_batches,
        init_seed=seed,
        sampling_method="sgmcmc_sgld",
        device="cpu",
    )
    tmp = Path(tempfile.mkdtemp(prefix="devinterp-chi-"))
    try:
        rss_before = rss_mb()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0, c0 = time.perf_counter(), time.process_time()
            tree = susceptibilities(
                model=model,
                dataset=train_ds,
                observables=observables,
                weight_restrictions=restrictions,
                sampling_task="phi",
                lr=step_size,
                n_beta=n_beta,
                localization=localization,
                num_chains=chains,
                num_draws=draws,
                batch_size=batch_size,
                num_burnin_steps=0,
                num_steps_bw_draws=1,
                num_init_loss_batches=init_loss_batches,
                init_seed=seed,
                device="cpu",
                output_path=tmp / "samples.zarr",
            )
            sus_ds = tree["susceptibilities"].to_dataset().load()
            ctx_ds = tree["context"].to_dataset().load()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = rss_mb()
        zarr_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        raw = _raw_chi(tmp, names, phi_batch, model)
    finally:
        di_sampling.sample_single_chain, di_sampling._write_init_loss = real_chain, real_init
        shutil.rmtree(tmp, ignore_errors=True)

    # devinterp's flat layout -> ours: chi[head, b * (T-1) + t], b the original probe row.
    wr = [str(w) for w in sus_ds["wr"].values]
    sus = sus_ds["sus"].values  # (sus_flat, wr); only the "probes" observable is in it
    ids = ctx_ds["input_ids"].values.reshape(-1, T)
    sus = sus.reshape(ids.shape[0], units_per_seq, len(wr))
    row_of = _match_rows(probes, ids)
    chi = np.stack([sus[row_of, :, wr.index(n)].reshape(-1) for n in names]).astype(np.float64)
    raw_rows = {k: v[:, row_of].reshape(len(names), -1) for k, v in raw.items() if np.ndim(v) == 3}

    failed = [str(w.message) for w in caught if "Chain failed" in str(w.message)]
    expected_steps = (len(names) + 1) * chains * draws
    return {
        "chi": chi,
        # the same estimator recomputed from devinterp's own draws (zarr), as a check, and
        # with φ centred at L_fix(w*) (our convention) instead of devinterp's init_loss
        "chi_recomputed": raw_rows["chi_devinterp"],
        "chi_phi_wstar": raw_rows["chi_phi_wstar"],
        "init_loss_mean": raw["init_loss_mean"],
        "phi_init": raw["phi_init"],
        "components": np.array(names),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "sgld_steps": counters["sgld_steps"],
        "expected_sgld_steps": expected_steps,
        "chains_s": counters["chains_s"],
        "init_loss_s": counters["init_loss_s"],
        "init_loss_forwards": (len(names) + 1) * chains * init_loss_batches,
        "observable_forwards": (len(names) + 1)
        * chains
        * draws
        * (phi_batch.shape[0] + probe_rows.shape[0])
        // batch_size,
        "probe_rows_evaluated": probe_rows.shape[0],
        "zarr_bytes": zarr_bytes,
        "failed_chains": np.array(failed, dtype=str),
        "settings": json.dumps(settings, sort_keys=True),
        "devinterp_version": _dist_version("devinterp"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        **{f"setting_{k}": v for k, v in settings.items() if not isinstance(v, str)},
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _match_rows(probes, ids):
    """For each probe row, the index of an identical row of devinterp's ``input_ids``."""
    import numpy as np

    keys = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(ids, dtype=np.int64))}
    try:
        return np.array([keys[np.ascontiguousarray(r).tobytes()] for r in probes])
    except KeyError:
        raise RuntimeError("a probe sequence is missing from devinterp's observable") from None


def _raw_chi(tmp: Path, names: list[str], phi_batch, model) -> dict:
    """Devinterp's estimator recomputed from its zarr draws, and the same with φ centred at
    L_fix(w*) as ``patterning_core`` does (the only difference in the estimator)."""
    import numpy as np
    import torch
    import xarray as xr

    def load(wr: str) -> xr.Dataset:
        return xr.open_datatree(
            str(tmp / f"samples_{wr}.zarr"), engine="zarr", consolidated=False
        ).to_dataset()

    full = load("full")
    full_L = float(full["loss_phi"].values.astype(np.float64).mean())
    full_probe = full["loss_probes"].values.astype(np.float64).mean(axis=(0, 1))
    init_loss_mean = float(full["init_loss"].values.astype(np.float64).mean())
    with torch.no_grad():
        phi_init = float(per_token_loss(model, torch.as_tensor(phi_batch)).double().mean())
    out = {"chi_devinterp": [], "chi_phi_wstar": []}
    for n in names:
        ds = load(n)
        L = ds["loss_phi"].values.astype(np.float64).mean(axis=(-2, -1))  # (chain, draw)
        probe = ds["loss_probes"].values.astype(np.float64)  # (chain, draw, rows, T-1)
        for key, centre in (("chi_devinterp", init_loss_mean), ("chi_phi_wstar", phi_init)):
            phi = L - centre
            e_phi_probe = (phi[:, :, None, None] * probe).mean(axis=(0, 1))
            chi = (phi * L).mean() - e_phi_probe - phi.mean() * (full_L - full_probe)
            out[key].append(chi)
    return {
        "chi_devinterp": np.stack(out["chi_devinterp"]),
        "chi_phi_wstar": np.stack(out["chi_phi_wstar"]),
        "init_loss_mean": init_loss_mean,
        "phi_init": phi_init,
    }


# ----------------------------------------------------------------------------- CLI


def check_against_patterning(checkpoint: Path, data: Path, tol: float = 1e-5) -> float:
    """Max |Δ| between this module's per-token losses and ``patterning_core``'s (project
    python). Raises if above ``tol``."""
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from patterning_core.model.checkpoints import load_checkpoint as pc_load
    from patterning_core.model.transformer import loss_per_token

    ckpt = pc_load(checkpoint)
    params, config = load_checkpoint(checkpoint)
    model = build_model(params, config)
    arrays = np.load(data)
    worst = 0.0
    for key in ("probes", "phi_batch", "train"):
        if key not in arrays:
            continue
        tokens = torch.as_tensor(arrays[key][:64].astype(np.int64))
        with torch.no_grad():
            ours = loss_per_token(ckpt.params, tokens, ckpt.config)
            mine = per_token_loss(model, tokens)
        worst = max(worst, float((ours - mine).abs().max()))
    if not worst <= tol:
        raise AssertionError(f"per-token losses differ by {worst:.3g} > {tol:g}")
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="devinterp susceptibilities -> OUT.npz (in the venv)")
    run.add_argument("--checkpoint", type=Path, required=True)
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--seed", type=int, default=100, help="devinterp init_seed")
    run.add_argument("--draws", type=int, default=100)
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--step-size", type=float, default=1e-3)
    run.add_argument("--n-beta", type=float, default=30.0)
    run.add_argument("--localization", type=float, default=300.0)
    run.add_argument(
        "--init-loss-batches",
        type=int,
        default=32,
        help="devinterp num_init_loss_batches (its default 32; only shifts φ's centring)",
    )
    run.add_argument("--heads", nargs="*", help="subset of components (default: all heads)")
    run.add_argument("--threads", type=int, help="torch.set_num_threads")
    run.add_argument("--progress", action="store_true", help="show devinterp's tqdm bars")
    chk = sub.add_parser("check", help="module vs patterning_core losses (project python)")
    chk.add_argument("--checkpoint", type=Path, required=True)
    chk.add_argument("--data", type=Path, required=True)
    sub.add_parser("ensure-venv", help="create .bench/devinterp-venv, print its python")
    args = parser.parse_args(argv)

    if args.cmd == "ensure-venv":
        print(ensure_devinterp_venv(Path(__file__).resolve().parents[1]))
        return
    if args.cmd == "check":
        worst = check_against_patterning(args.checkpoint, args.data)
        print(f"per-token losses agree with patterning_core: max |diff| = {worst:.2e}")
        return
    if not args.progress:  # read by tqdm at import time (torch imports it)
        os.environ["TQDM_DISABLE"] = "1"
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_devinterp(
        args.checkpoint,
        args.data,
        seed=args.seed,
        draws=args.draws,
        chains=args.chains,
        batch_size=args.batch_size,
        step_size=args.step_size,
        n_beta=args.n_beta,
        localization=args.localization,
        init_loss_batches=args.init_loss_batches,
        heads=args.heads,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **{k: np.asarray(v) for k, v in result.items()})
    print(
        f"devinterp χ {result['chi'].shape}: {result['wall_s']:.1f} s, "
        f"{result['sgld_steps']} SGLD steps, peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"zarr {result['zarr_bytes'] / 1e6:.1f} MB -> {args.out}"
    )


if __name__ == "__main__":
    main()
