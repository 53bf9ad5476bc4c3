"""Model adapters: what the sampler needs from a model (``base.ModelAdapter``), the
restricted-component fast path's interface (``base.BlockModel``), and the adapters of the
built-in transformer (``builtin``), TransformerLens ``HookedTransformer`` models
(``transformer_lens``, optional extra ``patterning[tl]``), any ``nn.Module`` with a
per-unit loss (``module``), and model specs (``spec.load_adapter``)."""
