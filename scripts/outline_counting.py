"""Has a model trained with outline text (``data.outline``) learned to count a run of spaces?
Per-token loss on fresh outline text (the outline probes' seed, which no training sequence
uses) at the two predictions that need the count, per checkpoint
(``patterning_core/experiments/spacing/counting.py``):

- the marker after a run of d spaces (it names d exactly: ``outline.MARKERS[d]``), per d;
- a space inside a run (does the run go on?), per position k in the run.

    .venv/bin/python scripts/outline_counting.py \\
        --run .patterning/runs/demo_long-bf7f484fe69fbe5a --steps 0 1000 3000 \\
        --out docs/results/spacing/fin_outline/counting

Writes ``<out>.md`` and ``<out>.json``.
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

from patterning_core.data.corpus import prepare_lm_data
from patterning_core.data.lm_data import OUTLINE_PROBE_SEED
from patterning_core.data.outline import MARKERS, outline_sequences
from patterning_core.experiments.spacing.counting import counting_losses, counting_targets
from patterning_core.model.checkpoints import checkpoint_path, load_checkpoint
from patterning_core.model.transformer import loss_per_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--steps", type=int, nargs="+", required=True)
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    first = load_checkpoint(checkpoint_path(args.run, args.steps[0]))
    config = first.config
    data = prepare_lm_data(config.n_ctx, config.d_vocab, whitespace="split")
    strings = data.token_strings
    tokens = outline_sequences(data.tokenizer, args.seqs, config.n_ctx, seed=OUTLINE_PROBE_SEED)
    targets = counting_targets(tokens.numpy(), strings)

    rows = []
    for step in args.steps:
        ckpt = load_checkpoint(checkpoint_path(args.run, step), config)
        with torch.no_grad():
            loss = loss_per_token(ckpt.params, tokens, config, fused=True).numpy()
        row = {"step": step, **counting_losses(loss, targets)}
        rows.append(row)

    command = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    depths = sorted({d for r in rows for d in r["marker"]})
    lines = [
        f"# Counting a run of spaces in held-out outline text: `{args.run.name}`",
        "",
        "Written by `scripts/outline_counting.py` (see its docstring):",
        "",
        f"    .venv/bin/python scripts/outline_counting.py {command}",
        "",
        f"Mean loss (nats) of the marker after a run of d spaces (a guess among the "
        f"{len(MARKERS)} markers: {np.log(len(MARKERS)):.2f}) and of a space that continues "
        "a run after k spaces:",
        "",
        "| step | markers, all | "
        + " | ".join(f"marker d={d}" for d in depths)
        + " | spaces in runs |",
        "|---:|---:|" + "---:|" * len(depths) + "---:|",
    ]
    for r in rows:
        cells = [f"{r['marker'][d][0]:.2f}" if d in r["marker"] else "—" for d in depths]
        lines.append(
            f"| {r['step']} | {r['marker_all']:.2f} | "
            + " | ".join(cells)
            + f" | {r['space_all']:.2f} |"
        )
    counts = ", ".join(f"d={d}: {rows[0]['marker'][d][1]}" for d in depths)
    lines += ["", f"Markers per depth: {counts}."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    args.out.with_name(args.out.name + ".json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=1) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
