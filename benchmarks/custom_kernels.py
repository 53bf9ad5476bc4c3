"""What hand-written kernels would buy on the χ workload, and the floor of its necessary work.

    python benchmarks/custom_kernels.py

The workload is ``chi_workload.py``'s (16 heads, 4 chains, 100 draws, batch 16, φ batch 16
and 8 probe sequences of 64 tokens). Our implementation splits the chains over two
one-thread processes, so each process runs 2 chains: 16 layer-0 head lanes, 16 layer-1 head
lanes and 2 full-run lanes, each for 100 gradient steps (16 sequences: 1,008 next-token
rows) and 100 draws (24 sequences: 1,512 rows). Everything here runs on one core.

1. Kernels, prototype C (``custom_kernels.c``, compiled here with the system's ``cc``)
   against the PyTorch kernels the library uses, at the workload's shapes:
   cross-entropy rows (log-sum-exp of 512 logits, and the softmax gradient), and the readout
   of a layer-1 head's lane-step, dense (``fused_loss.linear_cross_entropy``, as the library
   does it) against an exact low-rank form (the residual is a cached part plus the head's
   rank-8 write, so the logits are ``s·(A + z·C − z*·C*) + c0`` with ``A`` cached; fused in C).
2. Lane-steps in context (``sample_susceptibility_stats`` on 2 chains, 20 draws, each variant
   in a fresh process): the library as it is; with the C cross-entropy rows patched into its
   readout; with the head-lane forward compiled by ``torch.compile`` (inductor).
3. The floor of the necessary work: per-token losses need every row's log-sum-exp over 512
   logits (and the softmax for the gradient rows); lanes whose change reaches the readout at
   full rank (layer-0 heads, the full run) need the readout matmuls; layer-1 attention of
   layer-0 lanes and both layers of the full run need their softmax exponentials. Counted per
   process and timed at the best rates measured in part 1 (C rows, MKL matmuls), with every
   other cost (projections, LayerNorms, attention matmuls, the SGLD update) taken as zero.

Prints the tables and writes them to ``benchmarks/results/custom_kernels.md``.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(__file__).with_name("custom_kernels.c")
RESULTS = ROOT / "benchmarks" / "results" / "custom_kernels.md"
sys.path.insert(0, str(ROOT / "benchmarks"))

V, D, K = 512, 64, 8  # vocabulary, d_model, d_head
TRAIN_ROWS, EVAL_ROWS = 16 * 63, 24 * 63  # next-token rows per lane: gradient step, draw
STEPS = 100  # gradient steps and draws per lane
LANES = {"layer-0 heads": 16, "layer-1 heads": 16, "full run": 2}  # per process (2 chains)
ATTENTION_SCORES = 8 * 64 * 65 // 2  # causal scores of one layer's 8 heads, one sequence
CONTEXT_DRAWS = 20

_P, _I = ctypes.c_void_p, ctypes.c_int64


def load_kernels(tmp: Path) -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("no C compiler (cc/gcc) found: part 1 needs one")
    library = tmp / "custom_kernels.so"
    flags = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared"]
    subprocess.run([compiler, *flags, str(SOURCE), "-o", str(library), "-lm"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.lse_rows.argtypes = [_P, _P, _I, _I, _P, _P]
    lib.softmax_grad_rows.argtypes = [_P, _P, _P, _P, _I, _I]
    lowrank = [_P, _P, _P, _I, _P, _P, _I, _P, _P, _P]
    lib.lowrank_loss_forward.argtypes = [*lowrank, _I, _I, _P, _P]
    lib.lowrank_loss_backward.argtypes = [*lowrank, _P, _P, _I, _I, _P, _P, _P]
    return lib


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    assert t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())


def best_ms(fn, reps: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1000 * best


# ----------------------------------------------------------------------------- 1. kernels


def row_kernels(lib: ctypes.CDLL) -> tuple[list[str], dict]:
    """Cross-entropy rows (1,008 × 512): torch as the library does it against C."""
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(TRAIN_ROWS, V, generator=gen)
    target = torch.randint(0, V, (TRAIN_ROWS,), generator=gen)
    grad = torch.rand(TRAIN_ROWS, generator=gen)
    lse, loss, work = torch.empty(TRAIN_ROWS), torch.empty(TRAIN_ROWS), logits.clone()

    def torch_lse():
        got = torch.logsumexp(logits, dim=1)
        return got - logits.gather(1, target[:, None]).squeeze(1)

    def torch_grad():
        p = work.copy_(logits).sub_(lse[:, None]).exp_()
        p[torch.arange(TRAIN_ROWS), target] -= 1
        return p.mul_(grad[:, None])

    def c_lse():
        lib.lse_rows(ptr(logits), ptr(target), TRAIN_ROWS, V, ptr(lse), ptr(loss))

    def c_grad():
        work.copy_(logits)
        lib.softmax_grad_rows(ptr(work), ptr(lse), ptr(target), ptr(grad), TRAIN_ROWS, V)

    c_lse()
    ref = torch.logsumexp(logits.double(), 1)
    err = float(
        (loss.double() - (ref - logits.double().gather(1, target[:, None])[:, 0])).abs().max()
    )
    copy_ms = best_ms(lambda: work.copy_(logits))
    times = {
        "torch_lse": best_ms(torch_lse),
        "c_lse": best_ms(c_lse),
        "torch_grad": best_ms(torch_grad) - copy_ms,
        "c_grad": best_ms(c_grad) - copy_ms,
    }
    rows = [
        f"| log-sum-exp + loss, 1,008 × 512 | torch (library) | {times['torch_lse']:.3f} |",
        f"| log-sum-exp + loss, 1,008 × 512 | C (loss error ≤ {err:.1e} nats) "
        f"| {times['c_lse']:.3f} |",
        f"| softmax gradient, 1,008 × 512 | torch (library) | {times['torch_grad']:.3f} |",
        f"| softmax gradient, 1,008 × 512 | C | {times['c_grad']:.3f} |",
    ]
    return rows, times


def readout_kernels(lib: ctypes.CDLL) -> tuple[list[str], dict]:
    """The readout of one layer-1 head lane-step: train forward + backward, draw forward."""
    from patterning_core.fused_loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(1)
    x_train = torch.randn(TRAIN_ROWS, D, generator=gen, requires_grad=True)
    x_eval = torch.randn(EVAL_ROWS, D, generator=gen)
    W, b = 0.3 * torch.randn(D, V, generator=gen), 0.1 * torch.randn(V, generator=gen)
    t_train = torch.randint(0, V, (TRAIN_ROWS,), generator=gen)
    t_eval = torch.randint(0, V, (EVAL_ROWS,), generator=gen)

    def dense():
        torch.autograd.grad(linear_cross_entropy(x_train, W, b, t_train).sum(), x_train)
        with torch.no_grad():
            linear_cross_entropy(x_eval, W, b, t_eval)

    # Low-rank form: A cached (per chain per step for the gradient batch, once per run for
    # the fixed draw batch), the moving head's z·C (K = 8) and, on the gradient batch, the
    # head's checkpoint write −z*·C* (K2 = 8) folded in instead of a per-lane A.
    A_train, A_eval = 3 * torch.randn(TRAIN_ROWS, V), 3 * torch.randn(EVAL_ROWS, V)
    z_train, z_eval = 0.3 * torch.randn(TRAIN_ROWS, K), 0.3 * torch.randn(EVAL_ROWS, K)
    zs_train, C, Cs = 0.3 * torch.randn(TRAIN_ROWS, K), torch.randn(K, V), torch.randn(K, V)
    s_train, s_eval = torch.rand(TRAIN_ROWS) + 0.5, torch.rand(EVAL_ROWS) + 0.5
    c0 = torch.randn(V)
    lse, loss = torch.empty(TRAIN_ROWS), torch.empty(TRAIN_ROWS)
    lse_e, loss_e = torch.empty(EVAL_ROWS), torch.empty(EVAL_ROWS)
    grad = torch.ones(TRAIN_ROWS)
    dZ, dC, ds = torch.empty(TRAIN_ROWS, K), torch.zeros(K, V), torch.empty(TRAIN_ROWS)
    none = ctypes.c_void_p(0)

    def lowrank():
        train = (ptr(A_train), ptr(z_train), ptr(C), K, ptr(zs_train), ptr(Cs), K)
        lib.lowrank_loss_forward(
            *train, ptr(s_train), ptr(c0), ptr(t_train), TRAIN_ROWS, V, ptr(lse), ptr(loss)
        )
        lib.lowrank_loss_backward(
            *train,
            ptr(s_train),
            ptr(c0),
            ptr(t_train),
            ptr(lse),
            ptr(grad),
            TRAIN_ROWS,
            V,
            ptr(dZ),
            ptr(dC),
            ptr(ds),
        )
        lib.lowrank_loss_forward(
            ptr(A_eval),
            ptr(z_eval),
            ptr(C),
            K,
            none,
            none,
            0,
            ptr(s_eval),
            ptr(c0),
            ptr(t_eval),
            EVAL_ROWS,
            V,
            ptr(lse_e),
            ptr(loss_e),
        )

    # Correctness of the low-rank kernels against float64 autograd on the gradient batch.
    dC.zero_()
    lowrank()
    leaves = [t.double().requires_grad_() for t in (z_train, C, s_train)]
    u = A_train.double() + leaves[0] @ leaves[1] + zs_train.double() @ Cs.double()
    want = F.cross_entropy(u * leaves[2][:, None] + c0.double(), t_train, reduction="none")
    grads = torch.autograd.grad(want.sum(), leaves)
    relative = [
        float((a - e).abs().max() / e.abs().max()) for a, e in zip((dZ, dC, ds), grads, strict=True)
    ]
    err = max(float((loss.double() - want).abs().max()), *relative)
    # A for the gradient batch is one [1,008 × 64] @ [64 × 512] matmul per chain and step,
    # shared by the chain's 8 layer-1 head lanes: one eighth of it is this lane's share.
    x_cached = x_train.detach()
    share = best_ms(lambda: x_cached @ W) / 8
    times = {"dense": best_ms(dense, reps=5), "lowrank": best_ms(lowrank, reps=5) + share}
    rows = [
        f"| readout of a layer-1 head lane-step | dense, torch (library) | {times['dense']:.3f} |",
        f"| readout of a layer-1 head lane-step | low-rank, C, with ⅛ of A's matmul "
        f"(error ≤ {err:.1e}) "
        f"| {times['lowrank']:.3f} |",
    ]
    return rows, times


# ----------------------------------------------------------------------------- 2. in context


def _c_rows_cross_entropy(lib: ctypes.CDLL):
    """``linear_cross_entropy`` with its row passes done by the C kernels (float32)."""
    from patterning_core.fused_loss import CHUNK_ROWS

    class CRows(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, W, b, target):
            target = target.contiguous()
            loss, lse = torch.empty(x.shape[0]), torch.empty(x.shape[0])
            for i in range(0, x.shape[0], CHUNK_ROWS):
                rows = slice(i, i + CHUNK_ROWS)
                logits = torch.addmm(b, x[rows], W)
                lib.lse_rows(
                    ptr(logits),
                    ptr(target[rows]),
                    logits.shape[0],
                    W.shape[1],
                    ptr(lse[rows]),
                    ptr(loss[rows]),
                )
            ctx.save_for_backward(x, W, b, target, lse)
            return loss

        @staticmethod
        def backward(ctx, grad_loss):
            x, W, b, target, lse = ctx.saved_tensors
            grad_loss = grad_loss.contiguous()
            need_x, need_W, need_b = ctx.needs_input_grad[:3]
            dx = torch.empty_like(x) if need_x else None
            dW = torch.zeros_like(W) if need_W else None
            db = torch.zeros_like(b) if need_b else None
            for i in range(0, x.shape[0], CHUNK_ROWS):
                rows = slice(i, i + CHUNK_ROWS)
                p = torch.addmm(b, x[rows], W)
                lib.softmax_grad_rows(
                    ptr(p), ptr(lse[rows]), ptr(target[rows]), ptr(grad_loss[rows]), *p.shape
                )
                if dx is not None:
                    torch.mm(p, W.t(), out=dx[rows])
                if dW is not None:
                    dW.addmm_(x[rows].t(), p)
                if db is not None:
                    db.add_(p.sum(dim=0))
            return dx, dW, db, None

    return CRows.apply


def _compile_head_lanes() -> None:
    """Replace the head-lane forward by ``torch.compile`` of the same arithmetic."""
    from patterning_core import restricted_heads as rh
    from patterning_core.transformer import attention_layer, layer_norm

    def lanes_loss(x, base, tokens, W_Q, W_K, W_V, b_Q, b_K, b_V, W_O, params, layer, config):
        resid = base + rh._head_values(x, W_Q, W_K, W_V, b_Q, b_K, b_V) @ W_O
        for later in range(layer + 1, config.n_layers):
            resid = attention_layer(params, later, resid, config, fused=True)
        h = layer_norm(
            resid[..., :-1, :], params["ln_final.w"], params["ln_final.b"], config.ln_eps
        )
        logits = h @ params["unembed.W_U"] + params["unembed.b_U"]
        targets = tokens[..., 1:]
        loss = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none")
        return loss.reshape(targets.shape)

    compiled = torch.compile(lanes_loss, dynamic=False)

    def call(self, views, batch, chain_of_lane):
        (tokens,) = batch
        cache = self._cache(tokens, chain_of_lane)
        p = f"blocks.{self.layer}.attn."

        def lane(name, *none):
            return views[p + name][self.lanes, self.lane_heads][(slice(None), *none)]

        return compiled(
            cache.x,
            cache.base,
            cache.tokens,
            lane("W_Q", None),
            lane("W_K", None),
            lane("W_V", None),
            lane("b_Q", None, None),
            lane("b_K", None, None),
            lane("b_V", None, None),
            lane("W_O", None),
            self.params,
            self.layer,
            self.config,
        )

    rh.HeadLaneForward.__call__ = call


def context_lane_steps(variant: str) -> dict:
    """ms per lane-step of the layer-1 and layer-0 head groups (run in a fresh process)."""
    from chi_workload import SAMPLER, prepare_workload

    from patterning_core import transformer
    from patterning_core.checkpoints import load_checkpoint
    from patterning_core.restricted_heads import TransformerLoss
    from patterning_core.sampling import SamplerConfig
    from patterning_core.susceptibility import sample_susceptibility_stats
    from patterning_core.transformer import components

    torch.set_num_threads(1)
    if variant == "c-rows":
        with tempfile.TemporaryDirectory() as tmp:
            transformer.linear_cross_entropy = _c_rows_cross_entropy(load_kernels(Path(tmp)))
    elif variant == "compiled":
        _compile_head_lanes()
    ckpt_path, data_path = prepare_workload()
    ckpt, data = load_checkpoint(ckpt_path), np.load(data_path)
    comps = components(ckpt.config)

    def run(layer: str, draws: int) -> float:
        names = [c for c in comps if c.startswith(layer)]
        start = time.perf_counter()
        sample_susceptibility_stats(
            TransformerLoss(ckpt.config),
            ckpt.params,
            torch.from_numpy(data["train"]),
            torch.from_numpy(data["probes"]),
            comps,
            SamplerConfig(**{**SAMPLER, "num_draws": draws, "seed": 0}),
            component_names=names,
            include_full=False,
            phi_batch=torch.from_numpy(data["phi_batch"]),
            chain_ids=[0, 1],
            progress=False,
        )
        return time.perf_counter() - start

    out = {}
    for layer in ("L1", "L0"):
        out[f"{layer}_warmup_s"] = run(layer, 1)  # compiles, for the compiled variant
        out[f"{layer}_ms"] = 1000 * run(layer, CONTEXT_DRAWS) / (16 * (CONTEXT_DRAWS + 1))
    return out


def context_rows() -> tuple[list[str], dict]:
    from flows.runtime import ALLOCATOR_ENV

    env = {**os.environ, **ALLOCATOR_ENV}
    got = {}
    for variant in ("library", "c-rows", "compiled"):
        done = subprocess.run(
            [sys.executable, __file__, "--context", variant],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        got[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    names = {
        "library": "the library (PyTorch kernels)",
        "c-rows": "C cross-entropy rows in its readout",
        "compiled": "head-lane forward under torch.compile",
    }
    rows = []
    for variant, result in got.items():
        note = ""
        if variant == "compiled":
            note = f" (compile: {result['L1_warmup_s']:.0f} s + {result['L0_warmup_s']:.0f} s)"
        rows.append(f"| {names[variant]}{note} | {result['L1_ms']:.2f} | {result['L0_ms']:.2f} |")
    return rows, got


# ----------------------------------------------------------------------------- 3. the floor


def floor_rows(rows_ms: dict, ours_s: float | None, target_s: float | None) -> list[str]:
    """Seconds per process of the necessary kernels at the best measured rates."""
    lse_per_row = rows_ms["c_lse"] / 1000 / TRAIN_ROWS  # s per 512-logit row
    grad_per_row = rows_ms["c_grad"] / 1000 / TRAIN_ROWS
    exp_per_score = lse_per_row / V  # s per exponential (with its max pass)
    gen = torch.Generator().manual_seed(2)
    a, W = torch.randn(EVAL_ROWS, D, generator=gen), torch.randn(D, V, generator=gen)
    g = torch.randn(TRAIN_ROWS, V, generator=gen)
    x = torch.randn(TRAIN_ROWS, D, generator=gen)
    mm = {
        "forward": best_ms(lambda: a @ W) / 1000 * (TRAIN_ROWS + EVAL_ROWS) / EVAL_ROWS,
        "dx": best_ms(lambda: g @ W.t()) / 1000,
        "dW": best_ms(lambda: x.t() @ g) / 1000,
    }
    per_lane_step = {}
    rows_exps = (TRAIN_ROWS + EVAL_ROWS) * lse_per_row + TRAIN_ROWS * grad_per_row
    attention = ATTENTION_SCORES * (16 + 24) * exp_per_score  # one layer, train + draw
    per_lane_step["layer-1 heads"] = rows_exps
    per_lane_step["layer-0 heads"] = rows_exps + mm["forward"] + mm["dx"] + attention
    per_lane_step["full run"] = rows_exps + mm["forward"] + mm["dx"] + mm["dW"] + 2 * attention
    lines = []
    total = 0.0
    for what, lanes in LANES.items():
        seconds = lanes * STEPS * per_lane_step[what]
        total += seconds
        lines.append(f"| {what} | {lanes} | {1000 * per_lane_step[what]:.2f} | {seconds:.1f} |")
    lines.append(f"| **all (one process; the two run side by side)** | 34 | | **{total:.1f}** |")
    summary = [f"Floor of the necessary kernels: {total:.1f} s per process."]
    if target_s is not None:
        summary.append(
            f"10× devinterp (from `chi_workload.md`): {target_s:.1f} s, "
            f"{target_s / total:.1f}× the floor."
        )
    if ours_s is not None:
        summary.append(
            f"Ours (from `chi_workload.md`): {ours_s:.1f} s, {ours_s / total:.1f}× the floor."
        )
    return [*lines, "", " ".join(summary)]


def recorded_times() -> tuple[float | None, float | None]:
    """(ours, devinterp / 10) wall seconds from the last ``chi_workload.py`` table."""
    table = ROOT / "benchmarks" / "results" / "chi_workload.md"
    if not table.exists():
        return None, None
    found = {}
    for line in table.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("ours", "devinterp 2.0.1") and len(cells) > 1:
            found.setdefault(cells[0], float(cells[1]))
    devinterp = found.get("devinterp 2.0.1")
    return found.get("ours"), devinterp / 10 if devinterp else None


def main() -> None:
    if "--context" in sys.argv:
        print(json.dumps(context_lane_steps(sys.argv[sys.argv.index("--context") + 1])))
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        lib = load_kernels(Path(tmp))
        kernel_rows, rows_ms = row_kernels(lib)
        readout_lines, _ = readout_kernels(lib)
    lane_rows, _ = context_rows()
    ours_s, target_s = recorded_times()
    lines = [
        "# Hand-written kernels and the floor of the χ workload's necessary work",
        "",
        f"`python benchmarks/custom_kernels.py` on {platform.node()} ({os.cpu_count()} CPUs), "
        f"torch {torch.__version__}, one thread; best of 5.",
        "",
        "## 1. Kernels at the workload's shapes",
        "",
        "| what | implementation | ms |",
        "|---|---|---:|",
        *kernel_rows,
        *readout_lines,
        "",
        f"## 2. Lane-steps in context (2 chains, {CONTEXT_DRAWS} draws, fresh process each)",
        "",
        "| variant | ms per layer-1 head lane-step | ms per layer-0 head lane-step |",
        "|---|---:|---:|",
        *lane_rows,
        "",
        "## 3. Floor of the necessary kernels, per process (2 chains, 100 steps and draws)",
        "",
        "Only the work no exact implementation can skip, at the C and MKL rates above; every "
        "other cost counted as zero.",
        "",
        "| lanes | count | ms per lane-step | s |",
        "|---|---:|---:|---:|",
        *floor_rows(rows_ms, ours_s, target_s),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
