"""Recipes: the settings that several flows and commands share, in one place.

A recipe is plain JSON-able data (what flows pass around and what run folders are keyed
on): a data spec (``patterning_core.data.lm_data``), training settings
(``patterning_core.model.training.TrainConfig`` fields) and sampler settings
(``patterning_core.sampling.SamplerConfig`` fields). Flows take them as defaults; a
config file overrides any key. Functions return fresh copies, so callers may edit them.
"""

from __future__ import annotations

from patterning_core.sampling.config import SamplerConfig

__all__ = [
    "DEMO_CHI_CHECKPOINTS",
    "corpus_data",
    "demo_data",
    "demo_sampler",
    "demo_train",
    "induce_data",
    "induce_train",
    "induce_wide_train",
    "spacing_train",
]

# χ of the demo before, during and after the induction circuit forms (at about step 2,250).
DEMO_CHI_CHECKPOINTS = (1000, 2000, 3000)


def demo_data() -> dict:
    """Synthetic in-context bigrams (``bench`` vocabulary): the canonical induction circuit
    forms at about step 2,250 with :func:`demo_train` (see ``data/synthetic.py``)."""
    return {"source": "synthetic", "preset": "bench", "n_seqs": 20000, "seed": 0}


def demo_train() -> dict:
    """3,000 AdamW steps (lr 3e-3, 100 warm-up, batch 32), checkpoints every 250."""
    return {
        "steps": 3000,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_steps": 100,
        "seed": 0,
        "checkpoint_steps": list(range(0, 3001, 250)),
    }


def demo_sampler() -> dict:
    """The seed papers' settings for the 3M model (method.md §3): ε 1e-3, nβ 30, γ 300,
    4 chains × 100 draws, batch 16, no burn-in."""
    return SamplerConfig(
        step_size=1e-3,
        n_beta=30.0,
        localization=300.0,
        num_chains=4,
        num_draws=100,
        num_burnin=0,
        steps_between_draws=1,
        batch_size=16,
        seed=0,
    ).to_dict()


def induce_sampler() -> dict:
    """:func:`demo_sampler` with the structure beyond PC1 resolved: 8 chains × 150 draws
    taken 8 steps apart (one φ autocorrelation time is ≈ 7 steps at the `induce`
    substrate's checkpoints). At the seed papers' 4 × 100 draws one step apart the
    reliability of χ beyond PC1 between two halves of the chains is 0.21–0.23 (noise); here
    it is 0.85 (docs/results/induction_patterning/natural/mode_scan.md). About 20 minutes
    per checkpoint on 2 cores."""
    return {**demo_sampler(), "num_chains": 8, "num_draws": 150, "steps_between_draws": 8}


def corpus_data() -> dict:
    """The offline text corpus alone (the default corpus: see ``data/corpus.py``)."""
    return {"source": "corpus"}


def fin_data() -> dict:
    """The offline corpus with every whitespace character a token of its own (runs of
    spaces stay runs of tokens: what the spacing fin lives on)."""
    return {**corpus_data(), "whitespace": "split"}


def spacing_train() -> dict:
    """:func:`demo_train` with the fused readout (faster on the corpus's vocabulary)."""
    return {**demo_train(), "fused": True}


def induce_data() -> dict:
    """The natural-text substrate: the offline corpus with a fifth of the training sequences
    synthetic in-context bigrams (the issue's ceiling)."""
    return {**corpus_data(), "in_context_bigrams": 0.2}


def induce_train() -> dict:
    """24,000 AdamW steps (lr 3e-3, 100 warm-up, batch 32), fused readout, checkpoints every
    500 steps. With :func:`induce_data` and the ``demo`` preset the best layer-1 head
    reaches prefix matching 0.3 at step 17,250 and 4 of the 8 layer-1 heads end at 0.37–0.41,
    the others at 0.05–0.12 (seed 0; docs/results/induction_patterning/substrate/): the
    circuit forms in the second half of the run."""
    return {
        **demo_train(),
        "steps": 24000,
        "fused": True,
        "checkpoint_steps": list(range(0, 24001, 500)),
    }


def induce_wide_train() -> dict:
    """:func:`induce_train` for the ``induce_wide`` preset (d_head 16), where the circuit
    forms near step 5,000: 10,000 steps (about 5 minutes on one core), checkpoints every
    250 steps. The learning rate is constant after warm-up, so these steps are the first
    10,000 of a longer run with the same seed."""
    return {**induce_train(), "steps": 10000, "checkpoint_steps": list(range(0, 10001, 250))}
