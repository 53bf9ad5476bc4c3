"""Training and probe data: the offline text corpus and its BPE tokenizer, synthetic token
sequences, the pattern class of every token in its context, and language-model data
rebuilt from a small JSON spec.

May import ``patterning_core.sampling`` and ``patterning_core.model``.
"""
