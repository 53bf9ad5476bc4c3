"""The whitespace ("spacing") experiment: a χ mode on whitespace-run tokens, and the heads
that predict them (method.md §5–7; a reconstruction of the papers' spacing experiment, whose
exact protocol is unknown).

- Spacing units: loss units whose target token is whitespace only (spaces, tabs, newlines:
  in Python source mostly a newline followed by an indentation run), ``patterns.classify``.
- Spacing classes (:func:`spacing_classes`): the primary pattern classes of ``patterns.py``
  with whitespace taking precedence over induction, and whitespace split by run length
  (``whitespace_short``: at most :data:`SHORT_RUN` characters, ``whitespace_long``: longer),
  so that the class extrapolation of dh can tell indentation from single spaces.
- Spacing score of a head (:func:`spacing_scores`): how much zero-ablating it (its ``W_O``
  slice set to 0, so it writes nothing to the residual stream) raises the mean loss on
  spacing units, minus how much it raises the mean loss on all other units, in nats. High:
  the head serves whitespace prediction specifically ("heads that count spaces").
- Spacing mode (:func:`whitespace_correlations`): the correlation, over probe units, of each
  mode's data loadings v_k with the spacing-unit indicator.
- Measures of a (re)trained run (:func:`run_measures`): validation loss on spacing and other
  units over its checkpoints, and its heads' spacing scores at the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from patterning_core.data.lm_data import load_lm_tokens
from patterning_core.data.token_classes import PRIMARY_CLASSES, classify, for_units
from patterning_core.model.checkpoints import final_checkpoint, list_checkpoints, load_checkpoint
from patterning_core.model.transformer import TransformerConfig, head_name, loss_per_token

SHORT_RUN = 4
SPACING_CLASSES = (
    "whitespace_short",
    "whitespace_long",
    *(c for c in PRIMARY_CLASSES if c != "whitespace"),
)


def spacing_units(tokens: Tensor, token_strings: Sequence[str]) -> Tensor:
    """``bool [B, T − 1]``: unit (b, t) predicts a whitespace-only token."""
    return for_units(classify(tokens, token_strings).whitespace)


def spacing_classes(tokens: Tensor, token_strings: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Class of every loss unit of ``tokens [N, T]``: ``(codes int64 [N, T − 1], names)``.

    ``names`` is :data:`SPACING_CLASSES`; whitespace targets are split by run length at
    :data:`SHORT_RUN` characters, every other unit keeps its primary pattern class.
    """
    classes = classify(tokens, token_strings)
    primary = classes.primary()
    names = list(SPACING_CLASSES)
    remap = torch.tensor([names.index(c) if c in names else -1 for c in PRIMARY_CLASSES])
    codes = remap[primary]
    long_run = classes.whitespace_len > SHORT_RUN
    codes = torch.where(classes.whitespace & ~long_run, names.index("whitespace_short"), codes)
    codes = torch.where(classes.whitespace & long_run, names.index("whitespace_long"), codes)
    return for_units(codes).numpy().astype(np.int64), names


@torch.no_grad()
def spacing_scores(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor,
    token_strings: Sequence[str],
    batch_size: int = 64,
) -> dict[str, float]:
    """Spacing score of every head (module docstring), keyed ``"L{layer}H{head}"``, on
    ``tokens [N, T]`` (e.g. validation contexts)."""
    mask = spacing_units(tokens, token_strings)
    if not bool(mask.any()) or bool(mask.all()):
        raise ValueError("spacing scores need tokens with both whitespace and other targets")

    base = unit_losses(params, config, tokens, batch_size)
    scores = {}
    for layer in range(config.n_layers):
        key = f"blocks.{layer}.attn.W_O"
        for head in range(config.n_heads):
            w_o = params[key].clone()
            w_o[head] = 0.0
            delta = unit_losses({**params, key: w_o}, config, tokens, batch_size) - base
            scores[head_name(layer, head)] = float(delta[mask].mean() - delta[~mask].mean())
    return scores


def unit_losses_by_kind(
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    tokens: Tensor,
    token_strings: Sequence[str],
) -> dict[str, float]:
    """Mean loss on spacing units and on all other units of ``tokens [N, T]``."""
    mask = spacing_units(tokens, token_strings)
    losses = unit_losses(params, config, tokens)
    return {"spacing": float(losses[mask].mean()), "other": float(losses[~mask].mean())}


def run_measures(run_dir: str, data: dict, eval_seqs: int, curve_every: int = 500) -> dict:
    """Validation loss on whitespace and other targets (final, and every ``curve_every``
    steps) and the heads' spacing scores at the last checkpoint of ``run_dir``, on the
    first ``eval_seqs`` validation sequences of ``data``.

    Returns ``{"losses", "spacing_scores", "curve_steps", "curve"}`` (``losses``: the last
    entry of ``curve``, ``{"spacing", "other"}`` per step of ``curve_steps``).
    """
    last, final = final_checkpoint(run_dir)
    ckpts = dict(list_checkpoints(run_dir))
    tokens = load_lm_tokens(data, final.config)
    val, strings = tokens.val[:eval_seqs], tokens.token_strings
    curve_steps = [s for s in sorted(ckpts) if s % curve_every == 0 or s == last]
    curve = [
        unit_losses_by_kind(
            (final if s == last else load_checkpoint(ckpts[s])).params, final.config, val, strings
        )
        for s in curve_steps
    ]
    return {
        "losses": curve[-1],
        "spacing_scores": spacing_scores(final.params, final.config, val, strings),
        "curve_steps": curve_steps,
        "curve": curve,
    }


@torch.no_grad()
def unit_losses(
    params: Mapping[str, Tensor], config: TransformerConfig, tokens: Tensor, batch_size: int = 64
) -> Tensor:
    """Per-unit losses ``[N, T − 1]`` of ``tokens [N, T]``, in batches."""
    return torch.cat(
        [
            loss_per_token(params, tokens[i : i + batch_size], config, fused=True)
            for i in range(0, len(tokens), batch_size)
        ]
    )


def whitespace_correlations(modes: xr.Dataset, is_spacing: np.ndarray) -> xr.DataArray:
    """Pearson correlation of each mode's unit loadings with the spacing indicator
    ``is_spacing bool [unit]`` (same order as ``modes.unit``): dims ``("mode",)``."""
    x = np.asarray(is_spacing, dtype=np.float64)
    x = x - x.mean()
    v = modes["unit_loading"].transpose("mode", "unit").values
    v = v - v.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(v, axis=1) * np.linalg.norm(x)
    corr = np.where(denom > 0, v @ x / np.where(denom > 0, denom, 1.0), 0.0)
    return xr.DataArray(corr, dims=("mode",), coords={"mode": modes.mode.values})
