"""Train the ``demo`` preset on the default corpus and report when the induction circuit forms.

By default half of the training sequences are synthetic in-context bigrams
(``lm_data.mix_in_context_bigrams``; ``--in-context-bigrams 0`` trains on the corpus alone,
where no induction circuit forms within minutes of this CPU, see the report).

    .venv/bin/python scripts/induction_report.py --out reports/

Writes ``<out>/induction_demo.md`` (the measured numbers), ``<out>/induction_demo.json``,
``<out>/induction_demo_loss.png`` and ``<out>/induction_demo_prefix_matching.png``. The training
run (checkpoints, log) goes to ``--run-dir`` (default ``$PATTERNING_HOME/runs/induction_demo``)
and resumes from its last checkpoint if interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patterning_core.data.corpus import EOT, prepare_lm_data
from patterning_core.data.lm_data import mix_in_context_bigrams
from patterning_core.experiments.induction.metrics import (
    in_context_learning_score,
    induction_curve,
    repeated_text_losses,
)
from patterning_core.model.training import TrainConfig, checkpoint_schedule, train
from patterning_core.model.transformer import preset
from patterning_core.report.plots import plot_loss_curve, plot_prefix_matching
from patterning_core.workspace import patterning_home

# Demo training settings (chosen by measurement on a 2-core CPU; see the report).
DEMO_STEPS = 8000
DEMO_LR = 3e-3
DEMO_BATCH = 32
DEMO_WARMUP = 100
DEMO_IN_CONTEXT_BIGRAMS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reports"), help="report folder")
    p.add_argument("--run-dir", type=Path, default=None, help="checkpoint folder")
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=DEMO_STEPS)
    p.add_argument("--lr", type=float, default=DEMO_LR)
    p.add_argument("--batch-size", type=int, default=DEMO_BATCH)
    p.add_argument("--warmup", type=int, default=DEMO_WARMUP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--in-context-bigrams",
        type=float,
        default=DEMO_IN_CONTEXT_BIGRAMS,
        help="fraction of training sequences that are synthetic in-context bigrams (0: none)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--reference-kernels",
        action="store_true",
        help="train through the unfused reference forward (slower; same arithmetic)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Train, measure, plot and write the report; returns the measured numbers."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset(args.preset)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir or patterning_home() / "runs" / f"induction_{args.preset}_s{args.seed}"

    t0 = time.time()
    data = prepare_lm_data(config.n_ctx, config.d_vocab)
    t_data = time.time() - t0
    train_tokens = mix_in_context_bigrams(data.train, args.in_context_bigrams, config, args.seed)
    schedule = sorted(set(checkpoint_schedule(args.steps, n_log=12, n_linear=32)))
    tc = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        seed=args.seed,
        checkpoint_steps=tuple(schedule),
        fused=not args.reference_kernels,
    )
    title = f"{args.preset} on the Python standard library"
    if args.in_context_bigrams:
        title += f" + {args.in_context_bigrams:.0%} in-context bigrams"
    t1 = time.time()
    result = train(
        config,
        train_tokens,
        tc,
        run_dir=run_dir,
        progress=not args.no_progress,
        val_tokens=data.val[:256],
    )
    t_train = time.time() - t1

    eot = data.tokenizer.token_to_id(EOT)
    curve = induction_curve(run_dir, config, exclude=[eot])
    best = curve.best
    icl_first = in_context_learning_score(
        _load(run_dir, curve.steps[0], config), config, data.val[:256]
    )
    icl_last = in_context_learning_score(result.params, config, data.val[:256])
    spans = data.val[:256, : config.n_ctx // 2]
    repeat_init = repeated_text_losses(_load(run_dir, curve.steps[0], config), config, spans)
    repeat_final = repeated_text_losses(result.params, config, spans)
    formed = curve.formation_step
    loss_png = plot_loss_curve(
        result.steps,
        result.losses,
        out / "induction_demo_loss.png",
        val_steps=result.val_steps,
        val_losses=result.val_losses,
        marker_step=formed,
        title=title,
    )
    per_head = {f"L1H{h}": curve.scores[:, 1, h].tolist() for h in range(config.n_heads)}
    pm_png = plot_prefix_matching(
        curve.steps,
        best,
        out / "induction_demo_prefix_matching.png",
        threshold=curve.threshold,
        chance=curve.chance,
        per_head=per_head,
    )
    final = curve.scores[-1]
    numbers = {
        "preset": args.preset,
        "config": config.to_dict(),
        "n_params": config.n_params(),
        "train": {k: v for k, v in vars(tc).items() if k != "checkpoint_steps"},
        "corpus": {
            "source": data.corpus_source,
            "digest": data.corpus_digest,
            "n_tokens": data.n_tokens,
            "n_train_contexts": len(data.train),
            "in_context_bigrams": args.in_context_bigrams,
            "n_synthetic_contexts": len(train_tokens) - len(data.train),
            "n_val_contexts": len(data.val),
            **data.info,
        },
        "seconds_data": round(t_data, 1),
        "seconds_train": round(t_train, 1),
        "resumed_from": result.resumed_from,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "threshold": curve.threshold,
        "chance": curve.chance,
        "prev_chance": _uniform_previous_token(2 * min(config.n_ctx // 2, 256)),
        "steps": curve.steps,
        "best_layer1_pm": best,
        "best_layer0_pm": curve.scores[:, 0].max(dim=-1).values.tolist(),
        "formation_step": formed,
        "final_pm_per_head": final.tolist(),
        "final_prev_per_head": curve.previous_token[-1].tolist(),
        "pm_per_head": curve.scores.tolist(),
        "prev_per_head": curve.previous_token.tolist(),
        "icl_score_init": icl_first,
        "icl_score_final": icl_last,
        "repeated_text_loss_init": repeat_init,
        "repeated_text_loss_final": repeat_final,
        "final_train_loss_mean_last_100": sum(result.losses[-100:])
        / max(1, len(result.losses[-100:])),
        "val_steps": result.val_steps,
        "val_losses": result.val_losses,
    }
    (out / "induction_demo.json").write_text(json.dumps(numbers, indent=1))
    (out / "induction_demo.md").write_text(_markdown(numbers, loss_png.name, pm_png.name))
    return numbers


def _uniform_previous_token(length: int) -> float:
    """Previous-token score of uniform causal attention on sequences of ``length`` tokens."""
    return sum(1 / (t + 1) for t in range(1, length)) / (length - 1)


def copying_reading(first: float, second: float) -> str:
    """How the report reads the loss on a repeated span's ``first`` and ``second`` copy: by
    copying when the second costs under three quarters of the first, partly when it costs
    at least 5 % less, else not at all."""
    if second < 0.75 * first:
        return "the second copy is predicted by copying, the circuit works on natural text"
    if second <= 0.95 * first:
        return (
            f"partial copying: the second copy costs {1 - second / first:.0%} less than the "
            "first (this report reads a cut of more than a quarter as copying)"
        )
    return "no copying, the second copy costs about as much as the first"


def _load(run_dir: Path, step: int, config):
    from patterning_core.model.checkpoints import checkpoint_path, load_checkpoint

    return load_checkpoint(checkpoint_path(run_dir, step), expected_config=config).params


def _markdown(n: dict, loss_png: str, pm_png: str) -> str:
    c = n["config"]
    t = n["train"]
    formed = n["formation_step"]
    rows = "\n".join(
        f"| {s} | {b1:.3f} | {b0:.3f} | "
        + " | ".join(f"{x:.2f}" for x in pm[1])
        + " | "
        + " | ".join(f"{x:.2f}" for x in prev[0])
        + " |"
        for s, b1, b0, pm, prev in zip(
            n["steps"],
            n["best_layer1_pm"],
            n["best_layer0_pm"],
            n["pm_per_head"],
            n["prev_per_head"],
            strict=True,
        )
    )
    prev0 = " | ".join(f"{x:.2f}" for x in n["final_prev_per_head"][0])
    prev1 = " | ".join(f"{x:.2f}" for x in n["final_prev_per_head"][1])
    head_cols = " | ".join(f"L1H{h} PM" for h in range(c["n_heads"]))
    prev_cols = " | ".join(f"L0H{h} prev" for h in range(c["n_heads"]))
    heads = " | ".join(f"{x:.2f}" for x in n["final_pm_per_head"][1])
    heads0 = " | ".join(f"{x:.2f}" for x in n["final_pm_per_head"][0])
    hdr = " | ".join(f"H{h}" for h in range(c["n_heads"]))
    ri, rf = n["repeated_text_loss_init"], n["repeated_text_loss_final"]
    copying = copying_reading(rf[0], rf[1])
    mix = (
        f"plus {n['corpus']['n_synthetic_contexts']:,} synthetic in-context-bigram sequences "
        f"({n['corpus']['in_context_bigrams']:.0%} of training sequences; validation is "
        "corpus only)"
        if n["corpus"]["in_context_bigrams"]
        else "no synthetic sequences"
    )
    resumed = (
        "a fresh run" if n["resumed_from"] is None else f"resumed from step {n['resumed_from']}"
    )
    control = (
        "\nControl: the same model and settings on the corpus alone (`--in-context-bigrams 0`):"
        " [corpus_only/induction_demo.md](corpus_only/induction_demo.md).\n"
        if n["corpus"]["in_context_bigrams"]
        else ""
    )
    return f"""# Induction circuit formation: `{n["preset"]}` preset on the default corpus

Generated by `scripts/induction_report.py` (numbers below are measured, not assumed).
{control}
## Setup

- Model: attention-only transformer, {c["n_layers"]} layers x {c["n_heads"]} heads,
  d_model {c["d_model"]}, d_head {c["d_head"]}, context {c["n_ctx"]}, vocabulary {c["d_vocab"]}
  ({n["n_params"]:,} parameters), pre-LN, learned positions.
- Data: {n["corpus"]["n_documents"]} Python standard-library source files
  ({n["corpus"]["n_chars"]:,} characters, {n["corpus"]["n_tokens"]:,} BPE tokens;
  {n["corpus"]["n_train_contexts"]:,} training / {n["corpus"]["n_val_contexts"]:,} validation
  contexts), corpus digest `{n["corpus"]["digest"][:16]}`; {mix}.
- Training: AdamW, lr {t["lr"]} (warm-up {t["warmup_steps"]} steps), batch {t["batch_size"]},
  {t["steps"]} steps, grad-norm clip {t["grad_clip"]}, seed {t["seed"]}.
- Time: data preparation {n["seconds_data"]} s (cached after the first run), training
  {n["seconds_train"]} s on {n["machine"]} with {n["torch_threads"]} torch threads
  ({resumed}).

## Result

- Prefix-matching score (mean attention from the second copy of a repeated random sequence to
  the token after the earlier occurrence; 64 sequences of 2 x {c["n_ctx"] // 2} distinct tokens).
  Uniform-attention chance: **{n["chance"]:.3f}**.
- Best layer-1 head: **{n["best_layer1_pm"][0]:.3f}** at initialization,
  **{n["best_layer1_pm"][-1]:.3f}** at step {n["steps"][-1]}.
- Formation step (first checkpoint where the best layer-1 head reaches {n["threshold"]}):
  **{formed if formed is not None else "not reached"}**.
- In-context-learning score (loss at the last context position minus loss at a tenth of the
  context, validation set): {n["icl_score_init"]:.3f} at initialization,
  {n["icl_score_final"]:.3f} at the end.
- Repeated corpus text (256 validation spans of {c["n_ctx"] // 2} tokens, each followed by
  itself): loss on the first copy / second copy {ri[0]:.3f} / {ri[1]:.3f} at initialization,
  **{rf[0]:.3f} / {rf[1]:.3f}** at the end: {copying}.
- Final training loss (mean of the last 100 steps, training mix):
  {n["final_train_loss_mean_last_100"]:.3f}; validation loss (corpus):
  {n["val_losses"][0]:.3f} at initialization, {n["val_losses"][-1]:.3f} at the end.

Final prefix-matching score per head:

| layer | {hdr} |
|---|{"---|" * c["n_heads"]}
| 0 | {heads0} |
| 1 | {heads} |

Final previous-token score per head (mean attention from each position to the one before,
on the same sequences; uniform attention scores about {n["prev_chance"]:.3f}):

| layer | {hdr} |
|---|{"---|" * c["n_heads"]}
| 0 | {prev0} |
| 1 | {prev1} |

![loss]({loss_png})

![prefix matching]({pm_png})

## Prefix-matching (layer 1) and previous-token (layer 0) scores over checkpoints

| step | best layer-1 head | best layer-0 head | {head_cols} | {prev_cols} |
|---|---|---|{"---|" * (2 * c["n_heads"])}
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    numbers = run(parse_args(argv))
    print(json.dumps({k: numbers[k] for k in ("formation_step", "seconds_train")}))
    print(
        f"best layer-1 prefix matching: {numbers['best_layer1_pm'][0]:.3f} -> "
        f"{numbers['best_layer1_pm'][-1]:.3f} (threshold {numbers['threshold']}, "
        f"chance {numbers['chance']:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
