"""The compiled kernels against plain PyTorch on the χ workload, and the floor of its work.

    python benchmarks/custom_kernels.py

The workload is ``chi_workload.py``'s (16 heads, 4 chains, 100 draws, batch 16, φ batch 16
and 8 probe sequences of 64 tokens). Our implementation splits the chains over two
one-thread processes, so each process runs 2 chains: 16 layer-0 head lanes, 16 layer-1 head
lanes and 2 full-run lanes, each for 100 gradient steps (16 sequences: 1,008 next-token
rows) and 100 draws (24 sequences: 1,512 rows). Everything here runs on one core.

1. Kernels at the workload's shapes: the cross-entropy rows (log-sum-exp of 512 logits, and
   the softmax gradient) in torch and in the compiled kernels (``cpu_kernels``); the readout
   of one layer-1 head lane-step (gradient rows forward + backward, draw rows forward),
   dense (``fused_loss.linear_cross_entropy``) against the exact low-rank form the library
   uses for last-layer heads (``lowrank_readout``, its cached ``A`` matmul included).
2. Lane-steps in context (``sample_susceptibility_stats`` on 2 chains, 20 draws, each variant
   in a fresh process): the library with its compiled kernels switched off
   (``PATTERNING_CPU_KERNELS=0``: plain PyTorch, as before them), the library as it is, and,
   for comparison, the head-lane forward of the PyTorch-only library compiled by
   ``torch.compile`` (inductor).
3. The floor of the necessary work: per-token losses need every row's log-sum-exp over 512
   logits (and the softmax for the gradient rows); lanes whose change reaches the readout at
   full rank (layer-0 heads, the full run) need the readout matmuls; layer-1 attention of
   layer-0 lanes and both layers of the full run need their softmax exponentials. Counted per
   process and timed at the best rates measured in part 1 (compiled rows, MKL matmuls), with
   every other cost (projections, LayerNorms, attention matmuls, the SGLD update) as zero.

Prints the tables and writes them to ``benchmarks/results/custom_kernels.md``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tables import publish

from patterning_core.model import cpu_kernels

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "custom_kernels.md"
sys.path.insert(0, str(ROOT / "benchmarks"))

V, D, K = 512, 64, 8  # vocabulary, d_model, d_head
TRAIN_ROWS, EVAL_ROWS = 16 * 63, 24 * 63  # next-token rows per lane: gradient step, draw
STEPS = 100  # gradient steps and draws per lane
LANES = {"layer-0 heads": 16, "layer-1 heads": 16, "full run": 2}  # per process (2 chains)
ATTENTION_SCORES = 8 * 64 * 65 // 2  # causal scores of one layer's 8 heads, one sequence
CONTEXT_DRAWS = 20


def best_ms(fn, reps: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1000 * best


@contextmanager
def kernels_off():
    """Plain PyTorch inside the block (as ``PATTERNING_CPU_KERNELS=0``)."""
    original = cpu_kernels.kernels
    cpu_kernels.kernels = lambda: None
    try:
        yield
    finally:
        cpu_kernels.kernels = original


# ----------------------------------------------------------------------------- 1. kernels


def row_kernels(lib) -> tuple[list[str], dict]:
    """Cross-entropy rows (1,008 × 512): the library's torch ops against the kernels."""
    ptr = cpu_kernels.ptr
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
    want = torch.logsumexp(logits.double(), 1) - logits.double().gather(1, target[:, None])[:, 0]
    err = float((loss.double() - want).abs().max())
    copy_ms = best_ms(lambda: work.copy_(logits))
    times = {
        "torch_lse": best_ms(torch_lse),
        "c_lse": best_ms(c_lse),
        "torch_grad": best_ms(torch_grad) - copy_ms,
        "c_grad": best_ms(c_grad) - copy_ms,
    }
    rows = [
        f"| log-sum-exp + loss, 1,008 × 512 | torch | {times['torch_lse']:.3f} |",
        f"| log-sum-exp + loss, 1,008 × 512 | compiled kernel (error ≤ {err:.1e} nats) "
        f"| {times['c_lse']:.3f} |",
        f"| softmax gradient, 1,008 × 512 | torch | {times['torch_grad']:.3f} |",
        f"| softmax gradient, 1,008 × 512 | compiled kernel | {times['c_grad']:.3f} |",
    ]
    return rows, times


def readout_rows() -> list[str]:
    """The readout of one layer-1 head lane-step: gradient rows forward + backward, draw
    rows forward; dense (without and with the row kernels) and low-rank."""
    from patterning_core.model.fused_loss import linear_cross_entropy
    from patterning_core.model.lowrank_readout import lowrank_cross_entropy

    gen = torch.Generator().manual_seed(1)
    x_train = torch.randn(TRAIN_ROWS, D, generator=gen, requires_grad=True)
    x_eval = torch.randn(EVAL_ROWS, D, generator=gen)
    W, b = 0.3 * torch.randn(D, V, generator=gen), 0.1 * torch.randn(V, generator=gen)
    t_train = torch.randint(0, V, (1, TRAIN_ROWS), generator=gen)
    t_eval = torch.randint(0, V, (1, EVAL_ROWS), generator=gen)

    def dense():
        loss = linear_cross_entropy(x_train, W, b, t_train[0])
        torch.autograd.grad(loss.sum(), x_train)
        with torch.no_grad():
            linear_cross_entropy(x_eval, W, b, t_eval[0])

    # As the library runs it: the gradient batch's A is one [1,008 × 64] @ [64 × 512]
    # matmul per chain and step, shared by the chain's 8 layer-1 head lanes (this lane pays
    # an eighth), with the head's own write at w* as the low-rank correction (Z2, C2); the
    # draw batch's A is per lane, made once per run.
    A_train = x_train.detach() @ W
    A_eval = (x_eval @ W)[None]
    z_train = (0.3 * torch.randn(1, TRAIN_ROWS, K, generator=gen)).requires_grad_()
    z_eval = 0.3 * torch.randn(1, EVAL_ROWS, K, generator=gen)
    zs, C, Cs = (
        0.3 * torch.randn(1, TRAIN_ROWS, K, generator=gen),
        torch.randn(1, K, V),
        torch.randn(1, K, V),
    )
    s_train, s_eval = torch.rand(1, TRAIN_ROWS) + 0.5, torch.rand(1, EVAL_ROWS) + 0.5
    index = torch.zeros(1, dtype=torch.long)

    def lowrank():
        loss = lowrank_cross_entropy(A_train[None], index, z_train, C, zs, Cs, s_train, b, t_train)
        torch.autograd.grad(loss.sum(), z_train)
        with torch.no_grad():
            lowrank_cross_entropy(A_eval, index, z_eval, C, None, None, s_eval, b, t_eval)

    share = best_ms(lambda: x_eval[:TRAIN_ROWS] @ W) / 8
    with kernels_off():
        plain = best_ms(dense, reps=5)
    rows = [
        ("dense, torch", plain),
        ("dense, compiled row kernels", best_ms(dense, reps=5)),
        ("low-rank, compiled kernel (the library)", best_ms(lowrank, reps=5) + share),
    ]
    return [f"| readout of a layer-1 head lane-step | {n} | {ms:.3f} |" for n, ms in rows]


# ----------------------------------------------------------------------------- 2. in context


def _compile_head_lanes() -> None:
    """Replace the head-lane forward by ``torch.compile`` of the same arithmetic."""
    from patterning_core.model import restricted_heads as rh
    from patterning_core.model.transformer import attention_layer, layer_norm

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

    from patterning_core.estimators.susceptibility import sample_susceptibility_stats
    from patterning_core.model.checkpoints import load_checkpoint
    from patterning_core.model.restricted_heads import TransformerLoss
    from patterning_core.model.transformer import components
    from patterning_core.sampling.sgld import SamplerConfig

    torch.set_num_threads(1)
    if variant == "compiled":
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

    got = {}
    for variant in ("torch only", "library", "compiled"):
        env = {**os.environ, **ALLOCATOR_ENV}
        if variant != "library":  # plain PyTorch, as before the compiled kernels
            env[cpu_kernels.ENV_SWITCH] = "0"
        done = subprocess.run(
            [sys.executable, __file__, "--context", variant],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        got[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    names = {
        "torch only": f"the library, kernels off ({cpu_kernels.ENV_SWITCH}=0)",
        "library": "the library (compiled kernels on)",
        "compiled": "kernels off, head-lane forward under torch.compile",
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
    lib = cpu_kernels.kernels()
    if lib is None:
        raise SystemExit("the compiled kernels are not available here (see the warning above)")
    kernel_rows, rows_ms = row_kernels(lib)
    readout_lines = readout_rows()
    lane_rows, _ = context_rows()
    ours_s, target_s = recorded_times()
    lines = [
        "# Compiled kernels against plain PyTorch, and the floor of the χ workload's work",
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
        "Only the work no exact implementation can skip, at the compiled-kernel and MKL rates "
        "above; every other cost counted as zero.",
        "",
        "| lanes | count | ms per lane-step | s |",
        "|---|---:|---:|---:|",
        *floor_rows(rows_ms, ours_s, target_s),
    ]
    publish(lines, RESULTS)


if __name__ == "__main__":
    main()
